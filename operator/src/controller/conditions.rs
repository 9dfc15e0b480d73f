//! Status conditions: set them idempotently (the transition time changes only when the
//! status does) and derive them from a reconcile's result.

use crate::crd::{Condition, ConditionStatus};

use super::{Failure, ObjectEvent};

/// Condition types the operator sets.
pub const READY: &str = "Ready";
/// The spec cannot work as written.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// The broker cannot be reached.
pub const BROKER_UNAVAILABLE: &str = "BrokerUnavailable";
/// The requested change cannot be made in place.
pub const NOT_SUPPORTED: &str = "NotSupported";
/// A dead-letter queue is over its alert threshold.
pub const ALERT: &str = "AlertThresholdExceeded";
/// Condition type: the workers of a ConsumerGroup are available (its worker Deployment is
/// `Available`, or it is scaled to zero). A group is `Ready` only when this holds too.
pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";
/// Reason of `Ready=False` for a group whose consumers are provisioned but whose workers are
/// not available.
pub const WORKERS_UNAVAILABLE: &str = "WorkersUnavailable";
/// Condition type: a source partition of a Queue stopped arriving (the fan-out relay made no
/// progress within its bound while messages wait).
pub const SOURCING_STALLED: &str = "SourcingStalled";

/// The current time in RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now();
        }
        c.status = status;
        c.reason = reason.into();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: now(),
        observed_generation: generation,
    });
}

/// Finds a condition.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Marks the object ready and clears the problem conditions.
pub fn ready(conditions: &mut Vec<Condition>, message: impl Into<String>, generation: Option<i64>) {
    set(
        conditions,
        READY,
        ConditionStatus::True,
        "Provisioned",
        message,
        generation,
    );
    for t in [INVALID_SPEC, BROKER_UNAVAILABLE, NOT_SUPPORTED] {
        set(
            conditions,
            t,
            ConditionStatus::False,
            "AsExpected",
            "",
            generation,
        );
    }
}

/// Records a failure: `Ready=False` with the failure's reason, and the matching problem
/// condition `True`.
pub fn failed(conditions: &mut Vec<Condition>, failure: &Failure, generation: Option<i64>) {
    let message = failure.to_string();
    set(
        conditions,
        READY,
        ConditionStatus::False,
        failure.reason(),
        &message,
        generation,
    );
    let problem = match failure {
        Failure::InvalidSpec(_) => Some(INVALID_SPEC),
        Failure::Unavailable { .. } => Some(BROKER_UNAVAILABLE),
        Failure::NotSupported { .. } => Some(NOT_SUPPORTED),
        _ => None,
    };
    for t in [INVALID_SPEC, BROKER_UNAVAILABLE, NOT_SUPPORTED] {
        if Some(t) == problem {
            set(
                conditions,
                t,
                ConditionStatus::True,
                failure.reason(),
                &message,
                generation,
            );
        } else {
            set(
                conditions,
                t,
                ConditionStatus::False,
                "AsExpected",
                "",
                generation,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::InvalidField;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        ready(&mut c, "ok", Some(1));
        let t0 = get(&c, READY).unwrap().last_transition_time.clone();
        get(&c, READY).unwrap();
        c[0].last_transition_time = "2000-01-01T00:00:00Z".into();
        ready(&mut c, "still ok", Some(2));
        assert_eq!(
            get(&c, READY).unwrap().last_transition_time,
            "2000-01-01T00:00:00Z"
        );
        assert_eq!(get(&c, READY).unwrap().observed_generation, Some(2));
        failed(
            &mut c,
            &Failure::InvalidSpec(InvalidField::new("partitions", "bad")),
            Some(3),
        );
        let r = get(&c, READY).unwrap();
        assert_eq!(
            (r.status, r.reason.as_str()),
            (ConditionStatus::False, "InvalidSpec")
        );
        assert_ne!(r.last_transition_time, "2000-01-01T00:00:00Z");
        assert!(!t0.is_empty());
        assert!(is_true(&c, INVALID_SPEC));
        assert!(
            get(&c, INVALID_SPEC)
                .unwrap()
                .message
                .contains("spec.partitions: bad")
        );
        assert!(!is_true(&c, BROKER_UNAVAILABLE));
    }
}

/// The Warning Event for a failure that is new in `after` compared with `before` (the
/// `status.conditions` as read and as computed): `Ready` turned `False` for a failure, or
/// stayed `False` for another one. Unchanged failures raise nothing, so a failing idle object
/// does not write an Event on every resync; `Ready=False` while starting is no failure.
pub fn failure_event(before: &[Condition], after: &[Condition]) -> Option<ObjectEvent> {
    let now = get(after, READY).filter(|c| c.status == ConditionStatus::False)?;
    let was = get(before, READY);
    if was.is_some_and(|w| w.status == ConditionStatus::False && w.reason == now.reason) {
        return None;
    }
    Some(ObjectEvent {
        warning: true,
        reason: failure_reason(&now.reason)?,
        message: now.message.clone(),
        action: None,
    })
}

/// The failure reasons `Ready=False` can carry, as the `&'static str` Events take; `None`
/// for other reasons (starting, progressing).
fn failure_reason(reason: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "InvalidSpec",
        "BrokerNotFound",
        "SourceNotFound",
        "DeadLetterQueueNotFound",
        "SecretNotFound",
        "CredentialsUnusable",
        "NotFoundOnBroker",
        "NotYetStored",
        "ReferenceInvalid",
        "BrokerUnavailable",
        "BrokerError",
        "NotSupported",
        "NameConflict",
        "ScaleDownRefused",
        "KubernetesError",
        "KubernetesTimeout",
        WORKERS_UNAVAILABLE,
    ];
    KNOWN.iter().find(|k| **k == reason).copied()
}

/// Sets `WorkersAvailable` from the worker Deployment as stored, and turns a `Ready=True`
/// group `False` (reason `WorkersUnavailable`) while its workers are not available: a group
/// whose every worker pod fails to start is not ready, however well its consumers are
/// provisioned.
///
/// `stored_ready` is the `Ready` condition as stored before this reconcile: the reconcile set
/// `Ready=True` before looking at the workers, so its transition time is restored when the
/// final status equals the stored one (otherwise every reconcile would rewrite it).
pub fn workers(
    conditions: &mut Vec<Condition>,
    deployment: &k8s_openapi::api::apps::v1::Deployment,
    generation: Option<i64>,
    stored_ready: Option<&Condition>,
) {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.as_ref();
    let available = status.and_then(|s| s.available_replicas).unwrap_or(0);
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let deployment_available = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"));
    let (holds, reason, message) = if wanted == 0 {
        (true, "ScaledToZero", "no workers wanted".to_string())
    } else if deployment_available.is_some_and(|c| c.status == "True") {
        (
            true,
            "MinimumReplicasAvailable",
            format!("{available} of {wanted} workers available"),
        )
    } else {
        let why = deployment_available
            .and_then(|c| c.message.clone())
            .unwrap_or_else(|| "its pods are not ready yet".into());
        (
            false,
            WORKERS_UNAVAILABLE,
            format!(
                "{available} of {wanted} workers available ({why}); see kubectl get pods -l sluice.dev/group and kubectl describe deployment {name}"
            ),
        )
    };
    let status = if holds {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    set(
        conditions,
        WORKERS_AVAILABLE,
        status,
        reason,
        message.clone(),
        generation,
    );
    if !holds && is_true(conditions, READY) {
        set(
            conditions,
            READY,
            ConditionStatus::False,
            reason,
            format!("consumers provisioned, but {message}"),
            generation,
        );
    }
    if let (Some(stored), Some(now)) = (
        stored_ready,
        conditions.iter_mut().find(|c| c.type_ == READY),
    ) && stored.status == now.status
    {
        now.last_transition_time
            .clone_from(&stored.last_transition_time);
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus,
    };

    fn failed_with(reason: &'static str) -> Vec<Condition> {
        let mut c = Vec::new();
        let failure = Failure::Missing {
            reason,
            message: format!("{reason} message"),
        };
        failed(&mut c, &failure, Some(1));
        c
    }

    #[test]
    fn every_kind_of_failure_raises_an_event() {
        let failures = [
            Failure::InvalidSpec(crate::crd::common::InvalidField::new("x", "bad")),
            Failure::NotSupported {
                message: "no".into(),
                source: None,
            },
            Failure::unavailable("down", None),
            Failure::Broker {
                message: "refused".into(),
                source: None,
            },
            Failure::NameConflict("taken".into()),
            Failure::Timeout("slow".into()),
        ];
        for failure in failures {
            let mut c = Vec::new();
            failed(&mut c, &failure, Some(1));
            assert_eq!(
                failure_event(&[], &c).map(|e| e.reason),
                Some(failure.reason()),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn a_failure_raises_one_event_when_it_starts_or_changes() {
        let mut ok = Vec::new();
        ready(&mut ok, "fine", Some(1));
        let missing = failed_with("BrokerNotFound");
        let e = failure_event(&ok, &missing).expect("event on the transition");
        assert!(e.warning);
        assert_eq!(e.reason, "BrokerNotFound");
        assert_eq!(e.message, "BrokerNotFound message");
        assert!(
            failure_event(&[], &missing).is_some(),
            "first reconcile fails"
        );
        assert!(
            failure_event(&missing, &missing).is_none(),
            "unchanged: no event"
        );
        let other = failed_with("SourceNotFound");
        assert_eq!(
            failure_event(&missing, &other).map(|e| e.reason),
            Some("SourceNotFound")
        );
        assert!(
            failure_event(&missing, &ok).is_none(),
            "recovery is not a failure"
        );
        let mut starting = Vec::new();
        set(
            &mut starting,
            READY,
            ConditionStatus::False,
            "Starting",
            "0 of 3 ready",
            None,
        );
        assert!(
            failure_event(&ok, &starting).is_none(),
            "starting is not a failure"
        );
    }

    fn deployment(replicas: i32, available: i32, condition: Option<(&str, &str)>) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                name: Some("billing-workers".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: Some(available),
                conditions: condition.map(|(status, message)| {
                    vec![DeploymentCondition {
                        type_: "Available".into(),
                        status: status.into(),
                        message: Some(message.into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_group_is_ready_only_while_its_workers_are_available() {
        let provisioned = || {
            let mut c = Vec::new();
            ready(&mut c, "consumers provisioned", Some(1));
            c
        };
        let mut c = provisioned();
        workers(
            &mut c,
            &deployment(2, 2, Some(("True", "ok"))),
            Some(1),
            None,
        );
        assert!(is_true(&c, READY) && is_true(&c, WORKERS_AVAILABLE));

        let mut c = provisioned();
        let failing = deployment(
            2,
            0,
            Some(("False", "Deployment does not have minimum availability.")),
        );
        workers(&mut c, &failing, Some(1), None);
        assert!(!is_true(&c, WORKERS_AVAILABLE));
        let r = get(&c, READY).unwrap();
        assert_eq!(r.status, ConditionStatus::False);
        assert_eq!(r.reason, "WorkersUnavailable");
        assert!(
            r.message.contains("0 of 2 workers available"),
            "{}",
            r.message
        );
        assert!(r.message.contains("minimum availability"), "{}", r.message);

        // Just created: no status yet.
        let mut c = provisioned();
        workers(&mut c, &deployment(1, 0, None), Some(1), None);
        assert!(!is_true(&c, READY));

        // Scaled to zero by the autoscaler: nothing to be available.
        let mut c = provisioned();
        workers(&mut c, &deployment(0, 0, None), Some(1), None);
        assert!(is_true(&c, READY) && is_true(&c, WORKERS_AVAILABLE));

        // A group that is not provisioned keeps its own failure.
        let mut c = failed_with("BrokerNotFound");
        workers(&mut c, &deployment(2, 0, None), Some(1), None);
        assert_eq!(get(&c, READY).unwrap().reason, "BrokerNotFound");

        // Reconciled again with the workers still unavailable: the stored transition time
        // stays (no write of an unchanged status).
        let mut first = provisioned();
        workers(&mut first, &failing, Some(1), None);
        let mut stored = get(&first, READY).unwrap().clone();
        stored.last_transition_time = "2026-01-01T00:00:00Z".into();
        let mut again = vec![stored.clone()];
        ready(&mut again, "consumers provisioned", Some(1));
        workers(&mut again, &failing, Some(1), Some(&stored));
        assert_eq!(get(&again, READY).unwrap(), &stored);
    }
}
