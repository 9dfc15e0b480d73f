//! Where a queue record goes: its priority level's subject, or, when delayed, its own schedule
//! subject with the JetStream schedule headers (see [`sluice_broker::schedule`]). Checks the
//! record against what the queue accepts ([`QueueFeatures`]).

use std::time::{Duration, SystemTime};

use async_nats::Subject;
use sluice_broker::dlq::headers;
use sluice_broker::schedule::{self, QueueFeatures};
use sluice_broker::{ResourceRef, names};
use time::OffsetDateTime;

use super::error::{ProducerError, ProducerErrorKind};
use super::record::{Due, Record};

/// Why a record does not fit the queue (the caller re-reads the queue's features once before
/// reporting it, in case the Queue was just changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Misfit {
    /// The priority is not below the queue's level count.
    Priority,
    /// The queue does not accept delayed messages.
    DelayOff,
    /// The delay is longer than the queue's maxDelay.
    DelayTooLong,
}

/// The checked destination of a record.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) subject: Subject,
    pub(super) record: Record,
}

/// How far in the future `due` is, from now (zero when it is past).
fn delay_of(due: Due) -> Duration {
    match due {
        Due::After(d) => d,
        Due::At(t) => t.duration_since(SystemTime::now()).unwrap_or_default(),
    }
}

/// Checks `record` against `features`.
pub(super) fn check(record: &Record, features: QueueFeatures) -> Option<Misfit> {
    if record.priority >= features.priorities {
        return Some(Misfit::Priority);
    }
    let delay = record.due.map(delay_of).unwrap_or_default();
    if delay.is_zero() {
        return None;
    }
    match features.max_delay {
        None => Some(Misfit::DelayOff),
        Some(max) if delay > max => Some(Misfit::DelayTooLong),
        Some(_) => None,
    }
}

/// The error for a misfit, telling the user what to change.
pub(super) fn misfit_error(
    misfit: Misfit,
    record: &Record,
    queue: &ResourceRef,
    features: QueueFeatures,
) -> ProducerError {
    let text = match misfit {
        Misfit::Priority => format!(
            "priority {} is out of range for queue {queue}, which has {} priority level(s) (0 to {}): send with a lower priority or raise the Queue's spec.priorities",
            record.priority,
            features.priorities,
            features.priorities - 1
        ),
        Misfit::DelayOff => format!(
            "queue {queue} does not accept delayed messages: set spec.delay.enabled: true on the Queue, or send without a delay"
        ),
        Misfit::DelayTooLong => format!(
            "a delay of {} is longer than the maxDelay {} of queue {queue}: send with a shorter delay or raise the Queue's spec.delay.maxDelay",
            humanize(record.due.map(delay_of).unwrap_or_default()),
            humanize(features.max_delay.unwrap_or_default()),
        ),
    };
    ProducerError::new(ProducerErrorKind::InvalidMessage, text)
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// The subject and headers for a record that passed [`check`].
pub(super) fn route(queue: &ResourceRef, mut record: Record) -> Result<Route, ProducerError> {
    let level = record.priority;
    let target = names::queue_level_subject(queue, level);
    if level > 0 {
        record
            .headers
            .insert(schedule::PRIORITY, level.to_string().as_str());
    }
    let delay = record.due.map(delay_of).unwrap_or_default();
    if delay.is_zero() {
        return Ok(Route {
            subject: Subject::from(target),
            record,
        });
    }
    let due = OffsetDateTime::now_utc() + delay;
    let id = match &record.id {
        Some(id) => {
            // The server drops `Nats-Msg-Id` from the message a schedule produces (it only
            // de-duplicates the schedule itself); the id travels on as the original id, which
            // the worker's idempotency key and the DLQ envelope prefer.
            record.headers.insert(headers::ORIGINAL_ID, id.as_str());
            names::schedule_id(id)
        }
        None => format!("{:016x}", rand::random::<u64>()),
    };
    record
        .headers
        .insert(schedule::SCHEDULE, schedule::at(due)?.as_str());
    record
        .headers
        .insert(schedule::SCHEDULE_TARGET, target.as_str());
    record
        .headers
        .insert(schedule::DUE, schedule::rfc3339(due)?.as_str());
    Ok(Route {
        subject: Subject::from(names::queue_schedule_subject(queue, level, &id)),
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(priorities: u32, max_delay: Option<u64>) -> QueueFeatures {
        QueueFeatures {
            priorities,
            max_delay: max_delay.map(Duration::from_secs),
        }
    }

    #[test]
    fn checks_priority_and_delay_against_the_queue() {
        let r = Record::new("x");
        assert_eq!(check(&r, features(1, None)), None);
        let r = Record::new("x").priority(3);
        assert_eq!(check(&r, features(3, None)), Some(Misfit::Priority));
        assert_eq!(check(&r, features(4, None)), None);
        let r = Record::new("x").deliver_after(Duration::from_secs(120));
        assert_eq!(check(&r, features(1, None)), Some(Misfit::DelayOff));
        assert_eq!(check(&r, features(1, Some(60))), Some(Misfit::DelayTooLong));
        assert_eq!(check(&r, features(1, Some(120))), None);
        // A time in the past is no delay at all.
        let r = Record::new("x").deliver_at(SystemTime::UNIX_EPOCH);
        assert_eq!(check(&r, features(1, None)), None);
    }

    #[test]
    fn the_error_says_what_to_change() {
        let q = ResourceRef::new("shop", "emails").unwrap();
        let r = Record::new("x").deliver_after(Duration::from_secs(8 * 86_400));
        let e = misfit_error(Misfit::DelayTooLong, &r, &q, features(1, Some(7 * 86_400)));
        assert_eq!(e.kind(), ProducerErrorKind::InvalidMessage);
        let text = e.to_string();
        assert!(
            text.contains("8d") && text.contains("7d") && text.contains("maxDelay"),
            "{text}"
        );
    }

    #[test]
    fn delayed_records_go_to_their_own_schedule_subject() {
        let q = ResourceRef::new("shop", "emails").unwrap();
        let r = Record::new("x")
            .id("mail-1")
            .priority(1)
            .deliver_after(Duration::from_secs(30));
        let routed = route(&q, r).unwrap();
        assert_eq!(
            routed.subject.as_str(),
            format!(
                "sluice.q.shop.emails.sched.1.{}",
                names::schedule_id("mail-1")
            )
        );
        let h = &routed.record.headers;
        assert!(
            h.get(schedule::SCHEDULE)
                .unwrap()
                .as_str()
                .starts_with("@at ")
        );
        assert_eq!(
            h.get(schedule::SCHEDULE_TARGET).unwrap().as_str(),
            "sluice.q.shop.emails.p1"
        );
        let now = route(&q, Record::new("y")).unwrap();
        assert_eq!(now.subject.as_str(), "sluice.q.shop.emails");
    }
}
