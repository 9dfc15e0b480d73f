//! What is published ([`Record`]) and where it was stored ([`Published`]).

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use bytes::Bytes;

use super::error::{ProducerError, ProducerErrorKind};

/// A message to publish.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub(super) payload: Bytes,
    pub(super) key: Option<String>,
    pub(super) id: Option<String>,
    pub(super) headers: HeaderMap,
    pub(super) priority: u32,
    pub(super) due: Option<Due>,
}

/// When a delayed record is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// This long after it is sent.
    After(Duration),
    /// At this time.
    At(SystemTime),
}

impl Record {
    /// A keyless record without id.
    ///
    /// ```
    /// let record = sluice_worker::producer::Record::new("hello");
    /// assert_eq!(record.payload().as_ref(), b"hello");
    /// ```
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Default::default()
        }
    }

    /// Sets the key: it picks the partition (Kafka murmur2 of its UTF-8 bytes) and travels in
    /// the `Sluice-Key` header.
    ///
    /// ```
    /// let record = sluice_worker::producer::Record::new("x").key("customer-7");
    /// assert_eq!(record.key_str(), Some("customer-7"));
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the message id: JetStream stores a record with a given id once per duplicate
    /// window, so re-sending after a timeout is safe.
    ///
    /// ```
    /// let record = sluice_worker::producer::Record::new("x").id("order-1");
    /// assert_eq!(record.id_str(), Some("order-1"));
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds an application header.
    ///
    /// ```
    /// let record = sluice_worker::producer::Record::new("x").header("X-Source", "web");
    /// # let _ = record;
    /// ```
    pub fn header(
        mut self,
        name: impl async_nats::header::IntoHeaderName,
        value: impl async_nats::header::IntoHeaderValue,
    ) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the priority level (queues only): 0, the default, is the lowest; a queue with
    /// `priorities: N` takes levels 0 to N-1 and hands higher levels to workers first.
    ///
    /// ```
    /// let urgent = sluice_worker::producer::Record::new("x").priority(2);
    /// assert_eq!(urgent.priority_level(), 2);
    /// ```
    pub fn priority(mut self, level: u32) -> Self {
        self.priority = level;
        self
    }

    /// Delays delivery (queues with `delay.enabled` only): workers see the record `delay`
    /// after it is sent, not before. See [`QueueHandle::send_after`](super::QueueHandle::send_after).
    ///
    /// ```
    /// use std::time::Duration;
    /// let later = sluice_worker::producer::Record::new("x").deliver_after(Duration::from_secs(60));
    /// assert!(later.is_delayed());
    /// ```
    pub fn deliver_after(mut self, delay: Duration) -> Self {
        self.due = Some(Due::After(delay));
        self
    }

    /// Delays delivery until `at` (queues with `delay.enabled` only); a time in the past
    /// delivers at once.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let at = SystemTime::now() + Duration::from_secs(3600);
    /// let later = sluice_worker::producer::Record::new("x").deliver_at(at);
    /// assert!(later.is_delayed());
    /// ```
    pub fn deliver_at(mut self, at: SystemTime) -> Self {
        self.due = Some(Due::At(at));
        self
    }

    /// The priority level (0 unless set).
    ///
    /// ```
    /// assert_eq!(sluice_worker::producer::Record::new("x").priority_level(), 0);
    /// ```
    pub fn priority_level(&self) -> u32 {
        self.priority
    }

    /// Whether a delivery time was set.
    ///
    /// ```
    /// assert!(!sluice_worker::producer::Record::new("x").is_delayed());
    /// ```
    pub fn is_delayed(&self) -> bool {
        self.due.is_some()
    }

    /// The payload.
    ///
    /// ```
    /// assert_eq!(sluice_worker::producer::Record::new("x").payload().len(), 1);
    /// ```
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The key, if any.
    ///
    /// ```
    /// assert_eq!(sluice_worker::producer::Record::new("x").key_str(), None);
    /// ```
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The message id, if any.
    ///
    /// ```
    /// assert_eq!(sluice_worker::producer::Record::new("x").id_str(), None);
    /// ```
    pub fn id_str(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub(super) fn validate(&self) -> Result<(), ProducerError> {
        let bad = |s: &str| s.contains(['\r', '\n']);
        if self.key.as_deref().is_some_and(bad) {
            return Err(ProducerError::new(
                ProducerErrorKind::InvalidMessage,
                "record key contains a line break: keys travel in a header, use a key without CR/LF",
            ));
        }
        if self
            .id
            .as_deref()
            .is_some_and(|id| id.is_empty() || bad(id))
        {
            return Err(ProducerError::new(
                ProducerErrorKind::InvalidMessage,
                "record id is empty or contains a line break: use a non-empty id without CR/LF",
            ));
        }
        Ok(())
    }
}

/// Where a message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The partition (0 for queues).
    pub partition: u32,
    /// The offset in that partition (the stream sequence).
    pub offset: u64,
    /// Whether the broker recognised the message id as a duplicate and did not store it again
    /// (`offset` is then the original's).
    pub duplicate: bool,
}
