//! The dereference step shared by every kind: the Broker an object points to
//! ([`broker_of`], or [`live_broker`] and [`cleanup_broker`] during cleanup), the connection to it ([`connect`]) and
//! the broker's name for the object ([`resource_ref`]).

use tracing::{info, warn};

use super::Failure;
use super::context::ReconcileContext;
use crate::crd::{Broker, DeletionPolicy};

/// Reads a Broker resource or reports it missing.
pub(crate) async fn broker_of(
    ctx: &ReconcileContext,
    namespace: &str,
    name: &str,
) -> Result<Broker, Failure> {
    ctx.lookup
        .get::<Broker>(namespace, name)
        .await?
        .ok_or_else(|| Failure::Missing {
            reason: "BrokerNotFound",
            message: format!(
                "Broker {name} does not exist in namespace {namespace}; create it or fix spec.broker"
            ),
        })
}

/// The shared connection to the broker of `broker` (see [`super::context::BrokerPool`]). When it cannot
/// be reached and the Broker reports fewer ready servers than it runs, the failure says that
/// (the servers are starting or failing), not a guess about JetStream or credentials.
pub(crate) async fn connect(
    ctx: &ReconcileContext,
    namespace: &str,
    broker: &Broker,
) -> Result<sluice_broker::Broker, Failure> {
    ctx.pool
        .get(&ctx.lookup, namespace, broker)
        .await
        .map_err(|f| explain_unavailable(f, broker))
}

/// Rewrites an [`Failure::Unavailable`] with what the Broker's status knows.
pub fn explain_unavailable(failure: Failure, broker: &Broker) -> Failure {
    let Failure::Unavailable { message, source } = failure else {
        return failure;
    };
    let name = kube::ResourceExt::name_any(broker);
    let wanted = broker.spec.replicas;
    let message = match broker.status.as_ref().and_then(|s| s.ready_replicas) {
        Some(0) => format!(
            "Broker {name} has 0 of {wanted} servers ready: it cannot answer until its pods are Ready (see kubectl describe sbroker {name} and its pods)"
        ),
        Some(ready) if u32::try_from(ready).is_ok_and(|r| r < wanted) => {
            format!("Broker {name} has {ready} of {wanted} servers ready; {message}")
        }
        _ => message,
    };
    Failure::Unavailable { message, source }
}

/// The broker's resource reference for an object.
pub(crate) fn resource_ref(
    namespace: &str,
    name: &str,
) -> Result<sluice_broker::ResourceRef, Failure> {
    sluice_broker::ResourceRef::new(namespace, name).map_err(|e| Failure::broker("invalid name", e))
}

/// The Broker resource, or `None` (cleanup lets go) when it is gone or being deleted.
pub(crate) async fn live_broker(
    ctx: &ReconcileContext,
    namespace: &str,
    name: &str,
) -> Result<Option<crate::crd::Broker>, Failure> {
    match ctx
        .lookup
        .get::<crate::crd::Broker>(namespace, name)
        .await?
    {
        Some(b) if b.metadata.deletion_timestamp.is_none() => Ok(Some(b)),
        _ => {
            warn!(broker = %name, "Broker is gone or being deleted");
            Ok(None)
        }
    }
}

/// The broker to clean up a deleted object on, connected: `None` (nothing to do) with
/// `deletionPolicy: Retain`, which keeps `kept`, or when the Broker is gone or being deleted.
pub(crate) async fn cleanup_broker(
    ctx: &ReconcileContext,
    namespace: &str,
    broker: &str,
    policy: DeletionPolicy,
    kept: &str,
) -> Result<Option<sluice_broker::Broker>, Failure> {
    if policy != DeletionPolicy::Delete {
        info!("deletionPolicy Retain: keeping {kept}");
        return Ok(None);
    }
    let Some(broker_obj) = live_broker(ctx, namespace, broker).await? else {
        return Ok(None);
    };
    connect(ctx, namespace, &broker_obj).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BrokerSpec, BrokerStatus};

    fn broker(replicas: u32, ready: Option<i32>) -> Broker {
        let mut b = Broker::new("main", BrokerSpec::with_replicas(replicas));
        b.status = ready.map(|r| BrokerStatus {
            ready_replicas: Some(r),
            ..BrokerStatus::default()
        });
        b
    }

    #[test]
    fn an_unreachable_broker_says_how_many_servers_are_ready() {
        let guess = || {
            Failure::unavailable(
                "broker at nats://x did not answer a JetStream request (is JetStream enabled and are the credentials right?)",
                None,
            )
        };
        let none_ready = explain_unavailable(guess(), &broker(3, Some(0))).to_string();
        assert!(
            none_ready.starts_with("Broker main has 0 of 3 servers ready"),
            "{none_ready}"
        );
        assert!(!none_ready.contains("credentials"), "{none_ready}");
        let some = explain_unavailable(guess(), &broker(3, Some(1))).to_string();
        assert!(
            some.starts_with("Broker main has 1 of 3 servers ready; broker at"),
            "{some}"
        );
        // All ready, or no status yet: nothing more is known.
        for b in [broker(3, Some(3)), broker(1, None)] {
            assert_eq!(
                explain_unavailable(guess(), &b).to_string(),
                guess().to_string()
            );
        }
        let other = explain_unavailable(
            Failure::Broker {
                message: "x".into(),
                source: None,
            },
            &broker(3, Some(0)),
        );
        assert_eq!(other.reason(), "BrokerError");
    }
}
