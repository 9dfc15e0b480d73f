//! Status conditions: set them idempotently (the transition time changes only when the
//! status does) and derive them from a reconcile's result.

use crate::crd::{Condition, ConditionStatus};

use super::Failure;

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
