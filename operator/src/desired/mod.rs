//! The pure reconcile core: from a spec (plus what it points to, already looked up) to the
//! objects that should exist on the broker. No Kubernetes client and no broker connection
//! here, so the Kubernetes controllers and `sluice dev` share it.
//!
//! Every function validates what the API server's schema cannot (or what `sluice dev` gets
//! without an API server) and fails with an [`InvalidField`] naming the field to fix. Defaults
//! are applied here, never written back into the spec.

pub mod broker;
pub mod dlq;
pub mod group;
pub mod identity;
pub mod queue;
pub mod topic;
pub mod worker;

pub use crate::crd::InvalidField;

/// Replication factors JetStream supports for a stream.
pub const ALLOWED_REPLICAS: [u32; 3] = [1, 3, 5];

/// The stream replicas of an optional `replicas` field (default 1), checked.
pub fn replicas(value: Option<u32>, field: &str) -> Result<u32, InvalidField> {
    let r = value.unwrap_or(1);
    if ALLOWED_REPLICAS.contains(&r) {
        Ok(r)
    } else {
        Err(InvalidField::new(
            field,
            format!("must be 1, 3 or 5, got {r}"),
        ))
    }
}

/// Copies of a stream whose `replicas` is unset: as many as the broker has servers, up to 3,
/// so a stream on a 3- or 5-server Broker survives losing a server by default.
pub const DEFAULT_MAX_REPLICAS: u32 = 3;

/// The replicas of a stream on a Broker of `broker_replicas` servers: `value` when set
/// (checked to fit), else [`DEFAULT_MAX_REPLICAS`] or fewer when the Broker has fewer servers.
pub fn stream_replicas(
    value: Option<u32>,
    broker: &str,
    broker_replicas: u32,
) -> Result<u32, InvalidField> {
    match value {
        Some(_) => {
            let r = replicas(value, "replicas")?;
            replicas_fit(r, broker, broker_replicas)?;
            Ok(r)
        }
        None => Ok(if broker_replicas >= DEFAULT_MAX_REPLICAS {
            DEFAULT_MAX_REPLICAS
        } else {
            1
        }),
    }
}

/// Checks that a stream's replicas fit on its broker (a stream cannot have more copies than
/// the broker has servers).
pub fn replicas_fit(replicas: u32, broker: &str, broker_replicas: u32) -> Result<(), InvalidField> {
    if replicas > broker_replicas {
        return Err(InvalidField::new(
            "replicas",
            format!(
                "{replicas} copies need at least {replicas} broker servers, but Broker {broker} has {broker_replicas}; lower replicas or scale the Broker"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_replicas_follow_the_broker_up_to_three() {
        for (broker, want) in [(1, 1), (3, 3), (5, 3)] {
            assert_eq!(
                stream_replicas(None, "main", broker).unwrap(),
                want,
                "{broker}"
            );
        }
        assert_eq!(stream_replicas(Some(5), "main", 5).unwrap(), 5);
        assert_eq!(stream_replicas(Some(1), "main", 5).unwrap(), 1);
        let err = stream_replicas(Some(3), "main", 1).unwrap_err();
        assert_eq!(err.field, "replicas");
        assert!(err.message.contains("Broker main has 1"), "{err}");
    }
}
