//! [`ProducerConfig`]: in-flight bound, acknowledgement timeout, partition refresh.

use std::time::Duration;

/// Producer settings; start from `ProducerConfig::default()`.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Most acknowledgements outstanding at once; `send` waits beyond that.
    pub max_in_flight: usize,
    /// How long to wait for one acknowledgement.
    pub ack_timeout: Duration,
    /// How often a topic handle re-reads the partition count in the background
    /// (`None`: only on [`TopicHandle::refresh`](super::TopicHandle::refresh)).
    pub partition_refresh: Option<Duration>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            ack_timeout: Duration::from_secs(10),
            partition_refresh: Some(Duration::from_secs(30)),
        }
    }
}
