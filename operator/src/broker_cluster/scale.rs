//! The scale-down guard: a broker may not shrink below the replication of its streams.

use sluice_broker::{Error, ErrorKind, Result};

/// Refuses (`NotSupported`) a broker size smaller than the replica count of its most
/// replicated stream: such a stream could no longer place its replicas, and JetStream would
/// leave it without quorum. `max_stream_replicas` is 0 when the broker holds no streams.
pub fn validate_scale_down(requested_replicas: u8, max_stream_replicas: u8) -> Result<()> {
    if requested_replicas >= max_stream_replicas {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::NotSupported,
        format!(
            "cannot scale the broker to {requested_replicas} replicas: a stream on it keeps {max_stream_replicas} replicas; \
             lower the replicas of the Topics, Queues and DeadLetterQueues on this broker to at most {requested_replicas} first, \
             or keep at least {max_stream_replicas} broker replicas"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_sizes_that_fit_every_stream() {
        validate_scale_down(5, 3).unwrap();
        validate_scale_down(3, 3).unwrap();
        validate_scale_down(1, 1).unwrap();
        validate_scale_down(1, 0).unwrap();
    }

    #[test]
    fn refuses_scale_down_below_stream_replicas() {
        let err = validate_scale_down(1, 3).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotSupported);
        assert!(err.message().contains("keeps 3 replicas"), "{err}");
        assert_eq!(
            validate_scale_down(3, 5).unwrap_err().kind(),
            ErrorKind::NotSupported
        );
    }
}
