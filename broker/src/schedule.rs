//! Delayed delivery and priority levels of a queue, on JetStream (nats-server 2.12+).
//!
//! - **Delayed message** = a JetStream message schedule (ADR-51): the producer publishes it to
//!   its own subject `sluice.q.<ns>.<queue>.sched.<level>.<id>` (see
//!   [`names::queue_schedule_subject`]) with [`SCHEDULE`]` = @at <RFC 3339 time>` and
//!   [`SCHEDULE_TARGET`]` = <the level's subject>`. The server stores it (replicated and on disk
//!   like any message, so it survives restarts), and when it is due publishes the body with
//!   every other header verbatim to the target subject and removes the schedule. The group's
//!   consumers read only the level subjects, so a delayed message is invisible until due and
//!   then an ordinary queue message: retries, dead-lettering and idempotency keys are unchanged.
//!   The server drops `Nats-Msg-Id` from the produced message, so the producer also sends the
//!   id as `Sluice-Original-Id`, which the idempotency key and the DLQ envelope prefer.
//!   The id token is a hash of the message id ([`names::schedule_id`]): re-sending the same id
//!   replaces the schedule (the server keeps one per subject) instead of adding a second one.
//! - **Priority level** `l` (0 = lowest) = its own subject ([`names::queue_level_subject`])
//!   read by its own durable consumer ([`crate::group::group_consumers`]); the worker takes the
//!   highest level first, with a share reserved for the lower ones (the SDK's picker).
//! - What a queue accepts is stamped on its stream's metadata ([`QueueFeatures`]), so producers
//!   learn it from the broker alone.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::instrument;

use crate::client::Broker;
use crate::error::{Error, ErrorKind, Result};
use crate::names::{self, ResourceRef};
use crate::provision::{META_MAX_DELAY_MS, META_PRIORITIES};

/// JetStream's schedule header: `@at <RFC 3339 time>` for a delayed message.
pub const SCHEDULE: &str = "Nats-Schedule";
/// JetStream's header naming the subject a schedule publishes to.
pub const SCHEDULE_TARGET: &str = "Nats-Schedule-Target";
/// Set by the server on a message a schedule produced: the schedule's subject.
pub const SCHEDULER: &str = "Nats-Scheduler";
/// Set by the server on a message a schedule produced (`purge` for a one-shot delay).
pub const SCHEDULE_NEXT: &str = "Nats-Schedule-Next";
/// Set by Sluice producers on a delayed message: when it was due (RFC 3339), so a worker (and
/// the lateness figures in `docs/delay-and-priority.md`) can see how late it came.
pub const DUE: &str = "Sluice-Due";
/// Set by Sluice producers on a message sent with a priority other than 0.
pub const PRIORITY: &str = "Sluice-Priority";

/// The `Nats-Schedule` value for a one-shot delivery at `due`.
///
/// ```
/// let at = time::macros::datetime!(2026-01-31 12:00:00 UTC);
/// assert_eq!(sluice_broker::schedule::at(at).unwrap(), "@at 2026-01-31T12:00:00Z");
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when the time cannot be written as RFC 3339 (a year beyond 9999).
pub fn at(due: OffsetDateTime) -> Result<String> {
    Ok(format!("@at {}", rfc3339(due)?))
}

/// `due` in UTC as RFC 3339.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when the time cannot be written as RFC 3339 (a year beyond 9999).
pub fn rfc3339(due: OffsetDateTime) -> Result<String> {
    due.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidSpec,
                format!("cannot write {due} as an RFC 3339 time: use a time before the year 10000"),
                e,
            )
        })
}

/// What a queue accepts, from its stream's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFeatures {
    /// Priority levels (1: none).
    pub priorities: u32,
    /// The longest delay a producer may ask for; `None`: delayed delivery is off.
    pub max_delay: Option<Duration>,
}

impl QueueFeatures {
    /// Reads the features from a queue stream's metadata (absent keys: the defaults).
    pub fn from_metadata(meta: &std::collections::HashMap<String, String>) -> Self {
        Self {
            priorities: meta
                .get(META_PRIORITIES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            max_delay: meta
                .get(META_MAX_DELAY_MS)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
        }
    }
}

/// One priority level of a queue, as the CLI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLevelStatus {
    /// The level (0 = lowest).
    pub level: u32,
    /// Messages due: waiting for a worker or being handled.
    pub due: u64,
    /// Delayed messages not due yet.
    pub scheduled: u64,
}

impl Broker {
    /// The features of queue `queue` (priority levels, longest delay), from its stream.
    ///
    /// ```no_run
    /// # async fn run(broker: sluice_broker::Broker) -> sluice_broker::Result<()> {
    /// let q = sluice_broker::ResourceRef::new("shop", "emails")?;
    /// let features = broker.queue_features(&q).await?;
    /// println!("{} levels, delays up to {:?}", features.priorities, features.max_delay);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the queue has no stream; `Unavailable` or `Broker` when
    /// it cannot be read.
    #[instrument(skip(self), fields(queue = %queue))]
    pub async fn queue_features(&self, queue: &ResourceRef) -> Result<QueueFeatures> {
        let name = names::queue_stream(queue);
        let config = self.stream_config(&name).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("queue {queue} does not exist on the broker (no stream {name}): create the Queue first"),
            )
        })?;
        Ok(QueueFeatures::from_metadata(&config.metadata))
    }

    /// Per priority level (lowest first): messages due and delayed messages not due yet.
    ///
    /// ```no_run
    /// # async fn run(broker: sluice_broker::Broker) -> sluice_broker::Result<()> {
    /// let q = sluice_broker::ResourceRef::new("shop", "emails")?;
    /// for level in broker.queue_levels(&q).await? {
    ///     println!("p{}: {} due, {} scheduled", level.level, level.due, level.scheduled);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Broker::queue_features`].
    #[instrument(skip(self), fields(queue = %queue))]
    pub async fn queue_levels(&self, queue: &ResourceRef) -> Result<Vec<QueueLevelStatus>> {
        let stream = names::queue_stream(queue);
        let features = self.queue_features(queue).await?;
        let config = self.stream_config(&stream).await?;
        let schedules = config.is_some_and(|c| c.allow_message_schedules);
        let mut out = Vec::with_capacity(features.priorities as usize);
        for level in 0..features.priorities {
            let due = self
                .count_on_subjects(&stream, &names::queue_level_subject(queue, level))
                .await?;
            let scheduled = if schedules {
                self.count_on_subjects(&stream, &names::queue_schedule_filter(queue, Some(level)))
                    .await?
            } else {
                0
            };
            out.push(QueueLevelStatus {
                level,
                due,
                scheduled,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_default_to_one_level_without_delay() {
        let f = QueueFeatures::from_metadata(&Default::default());
        assert_eq!(f.priorities, 1);
        assert_eq!(f.max_delay, None);
        let meta = [
            (META_PRIORITIES.to_string(), "3".to_string()),
            (META_MAX_DELAY_MS.to_string(), "60000".to_string()),
        ]
        .into_iter()
        .collect();
        let f = QueueFeatures::from_metadata(&meta);
        assert_eq!(f.priorities, 3);
        assert_eq!(f.max_delay, Some(Duration::from_secs(60)));
    }
}
