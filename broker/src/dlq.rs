//! The dead-letter envelope: the original payload and headers plus the `Sluice-*` headers
//! below, so a dead-lettered message can be inspected and replayed without losing anything.
//!
//! | header | meaning |
//! |---|---|
//! | `Sluice-Source` | `topic/<name>` or `queue/<name>` |
//! | `Sluice-Source-Subject` | subject the message was originally published to |
//! | `Sluice-Partition` | partition number (0 for queues) |
//! | `Sluice-Offset` | stream sequence in that partition |
//! | `Sluice-Group` | consumer group that gave up |
//! | `Sluice-Attempts` | deliveries made (including crashed ones) |
//! | `Sluice-Last-Error` | the handler's last error (truncated to 1 KiB) |
//! | `Sluice-First-Failure`, `Sluice-Last-Failure` | RFC 3339 times |
//! | `Sluice-Original-Id` | the original message id (`Nats-Msg-Id`), or `<stream>:<offset>` |
//!
//! The DLQ publish carries `Nats-Msg-Id = dlq:<group>:<original id>`, so a worker that crashes
//! between dead-lettering and acknowledging does not dead-letter twice.
//!
//! Reading a DLQ: [`Broker::dead_letters`] lists every dead letter with its envelope decoded,
//! [`Broker::dead_letter`] reads one by its DLQ sequence, [`Broker::remove_dead_letter`]
//! deletes one (after a replay); [`Broker::dlq_status`](crate::Broker::dlq_status) counts them.

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::instrument;

use crate::client::Broker;
use crate::config::SourceKind;
use crate::error::{Error, ErrorKind, Result, broker_err};
use crate::names::{self, ResourceRef};

/// Header names of the envelope.
pub mod headers {
    /// `topic/<name>` or `queue/<name>`.
    pub const SOURCE: &str = "Sluice-Source";
    /// Subject the message was originally published to.
    pub const SOURCE_SUBJECT: &str = "Sluice-Source-Subject";
    /// Partition number.
    pub const PARTITION: &str = "Sluice-Partition";
    /// Offset (stream sequence) in the partition.
    pub const OFFSET: &str = "Sluice-Offset";
    /// The group that dead-lettered the message.
    pub const GROUP: &str = "Sluice-Group";
    /// Deliveries made.
    pub const ATTEMPTS: &str = "Sluice-Attempts";
    /// Last error text.
    pub const LAST_ERROR: &str = "Sluice-Last-Error";
    /// First failure time (RFC 3339).
    pub const FIRST_FAILURE: &str = "Sluice-First-Failure";
    /// Last failure time (RFC 3339).
    pub const LAST_FAILURE: &str = "Sluice-Last-Failure";
    /// The original message id.
    pub const ORIGINAL_ID: &str = "Sluice-Original-Id";
    /// Set on a replayed message: the DLQ sequence it came from.
    pub const REPLAY_OF: &str = "Sluice-Replay-Of";
    /// JetStream's de-duplication id header.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// The message key (used for partitioning), set by Sluice producers.
    pub const KEY: &str = "Sluice-Key";

    /// Every envelope header (removed again on replay).
    pub const ENVELOPE: [&str; 10] = [
        SOURCE,
        SOURCE_SUBJECT,
        PARTITION,
        OFFSET,
        GROUP,
        ATTEMPTS,
        LAST_ERROR,
        FIRST_FAILURE,
        LAST_FAILURE,
        ORIGINAL_ID,
    ];
}

/// Longest error text kept in `Sluice-Last-Error`.
pub const MAX_ERROR_LEN: usize = 1024;

/// Why and from where a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Topic or queue it came from.
    pub source_kind: SourceKind,
    /// Name of that topic or queue.
    pub source_name: String,
    /// Subject it was published to.
    pub source_subject: String,
    /// Partition (0 for queues).
    pub partition: u32,
    /// Offset in the partition stream.
    pub offset: u64,
    /// Group that gave up.
    pub group: String,
    /// Deliveries made.
    pub attempts: u64,
    /// The handler's last error.
    pub last_error: String,
    /// When the first delivery failed.
    pub first_failure: OffsetDateTime,
    /// When the last delivery failed.
    pub last_failure: OffsetDateTime,
    /// The original message id.
    pub original_id: String,
}

impl DeadLetter {
    /// The `Nats-Msg-Id` of the DLQ publish: stable per (group, original message).
    pub fn dlq_message_id(&self) -> String {
        format!("dlq:{}:{}", self.group, self.original_id)
    }

    /// The original headers plus the envelope headers; any earlier envelope is replaced.
    pub fn encode(&self, original: Option<&HeaderMap>) -> HeaderMap {
        let mut out = HeaderMap::new();
        if let Some(original) = original {
            for (name, values) in original.iter() {
                let name_str: &str = name.as_ref();
                if headers::ENVELOPE.contains(&name_str) || is_jetstream_header(name_str) {
                    continue;
                }
                for value in values {
                    out.append(name_str, value.as_str());
                }
            }
        }
        let source = match self.source_kind {
            SourceKind::Topic => format!("topic/{}", self.source_name),
            SourceKind::Queue => format!("queue/{}", self.source_name),
        };
        out.insert(headers::SOURCE, source.as_str());
        out.insert(headers::SOURCE_SUBJECT, self.source_subject.as_str());
        out.insert(headers::PARTITION, self.partition.to_string().as_str());
        out.insert(headers::OFFSET, self.offset.to_string().as_str());
        out.insert(headers::GROUP, self.group.as_str());
        out.insert(headers::ATTEMPTS, self.attempts.to_string().as_str());
        out.insert(headers::LAST_ERROR, header_safe(&self.last_error).as_str());
        out.insert(headers::FIRST_FAILURE, rfc3339(self.first_failure).as_str());
        out.insert(headers::LAST_FAILURE, rfc3339(self.last_failure).as_str());
        out.insert(headers::ORIGINAL_ID, self.original_id.as_str());
        out.insert(headers::NATS_MSG_ID, self.dlq_message_id().as_str());
        out
    }

    /// Reads the envelope back from a DLQ message's headers.
    pub fn decode(h: &HeaderMap) -> Result<Self> {
        let get = |name: &str| -> Result<String> {
            h.get(name).map(|v| v.as_str().to_string()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Decode,
                    format!(
                        "dead-letter message has no {name} header: it was not written by Sluice"
                    ),
                )
            })
        };
        let num = |name: &str| -> Result<u64> {
            get(name)?
                .parse::<u64>()
                .map_err(|e| Error::with_source(ErrorKind::Decode, format!("bad {name} header"), e))
        };
        let time = |name: &str| -> Result<OffsetDateTime> {
            OffsetDateTime::parse(&get(name)?, &Rfc3339)
                .map_err(|e| Error::with_source(ErrorKind::Decode, format!("bad {name} header"), e))
        };
        let source = get(headers::SOURCE)?;
        let (source_kind, source_name) = match source.split_once('/') {
            Some(("topic", name)) => (SourceKind::Topic, name.to_string()),
            Some(("queue", name)) => (SourceKind::Queue, name.to_string()),
            _ => {
                return Err(Error::new(
                    ErrorKind::Decode,
                    format!(
                        "bad {} header {source:?}: expected topic/<name> or queue/<name>",
                        headers::SOURCE
                    ),
                ));
            }
        };
        let partition = u32::try_from(num(headers::PARTITION)?)
            .map_err(|e| Error::with_source(ErrorKind::Decode, "bad Sluice-Partition header", e))?;
        Ok(Self {
            source_kind,
            source_name,
            source_subject: get(headers::SOURCE_SUBJECT)?,
            partition,
            offset: num(headers::OFFSET)?,
            group: get(headers::GROUP)?,
            attempts: num(headers::ATTEMPTS)?,
            last_error: get(headers::LAST_ERROR)?,
            first_failure: time(headers::FIRST_FAILURE)?,
            last_failure: time(headers::LAST_FAILURE)?,
            original_id: get(headers::ORIGINAL_ID)?,
        })
    }
}

/// The original headers of a DLQ message, without the envelope, with the original
/// message id restored: what a replay publishes.
pub fn original_headers(dlq_headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in dlq_headers.iter() {
        let name_str: &str = name.as_ref();
        if headers::ENVELOPE.contains(&name_str) || is_jetstream_header(name_str) {
            continue;
        }
        for value in values {
            out.append(name_str, value.as_str());
        }
    }
    if let Some(id) = dlq_headers.get(headers::ORIGINAL_ID) {
        out.insert(headers::NATS_MSG_ID, id.as_str());
    }
    out
}

/// The headers a replay publishes: the original headers (as [`original_headers`]) with
/// `Nats-Msg-Id = replay:<dlq sequence>:<original id>`, `Sluice-Original-Id = <original id>`
/// and `Sluice-Replay-Of = <dlq sequence>`.
///
/// The id is derived from the DLQ entry rather than reused as is: the original id is usually
/// still inside the source's de-duplication window (the first delivery was minutes ago), where
/// JetStream would silently drop the replay. Replaying the same DLQ entry twice yields the same
/// id, so a repeated replay is de-duplicated; consumers keep recognising the message through
/// `Sluice-Original-Id` (the SDK's idempotency key prefers it).
pub fn replay_headers(dlq_headers: &HeaderMap, dlq_sequence: u64) -> HeaderMap {
    let mut out = original_headers(dlq_headers);
    let original = dlq_headers
        .get(headers::ORIGINAL_ID)
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| format!("dlq:{dlq_sequence}"));
    out.insert(
        headers::NATS_MSG_ID,
        format!("replay:{dlq_sequence}:{original}").as_str(),
    );
    out.insert(headers::ORIGINAL_ID, original.as_str());
    out.insert(headers::REPLAY_OF, dlq_sequence.to_string().as_str());
    out
}

/// A dead letter as stored in a DLQ: where it is, its decoded envelope, and the original
/// payload and headers (envelope included), which is what a replay needs.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    /// Its sequence in the DLQ stream (what `sluice dlq show` and `replay --seq` take).
    pub sequence: u64,
    /// Why and from where it was dead-lettered.
    pub envelope: DeadLetter,
    /// Every header as stored: the original headers plus the envelope.
    pub headers: HeaderMap,
    /// The original payload.
    pub payload: Bytes,
    /// When the DLQ stored it.
    pub stored_at: OffsetDateTime,
}

impl StoredDeadLetter {
    /// The message key (`Sluice-Key`) the original carried, if any.
    ///
    /// ```
    /// # use sluice_broker::dlq::StoredDeadLetter;
    /// # fn f(letter: &StoredDeadLetter) {
    /// let key: Option<&str> = letter.key();
    /// # let _ = key; }
    /// ```
    pub fn key(&self) -> Option<&str> {
        self.headers.get(headers::KEY).map(|v| v.as_str())
    }

    /// The headers a replay of this dead letter publishes (see [`replay_headers`]).
    ///
    /// ```
    /// # use sluice_broker::dlq::{StoredDeadLetter, headers};
    /// # fn f(letter: &StoredDeadLetter) {
    /// let h = letter.replay_headers();
    /// assert!(h.get(headers::GROUP).is_none());
    /// # }
    /// ```
    pub fn replay_headers(&self) -> HeaderMap {
        replay_headers(&self.headers, self.sequence)
    }

    fn read(
        dlq: &ResourceRef,
        message: async_nats::jetstream::message::StreamMessage,
    ) -> Result<Self> {
        let envelope = DeadLetter::decode(&message.headers).map_err(|e| {
            Error::with_source(
                ErrorKind::Decode,
                format!("DLQ {dlq} message {}", message.sequence),
                e,
            )
        })?;
        Ok(Self {
            sequence: message.sequence,
            envelope,
            headers: message.headers,
            payload: message.payload,
            stored_at: message.time,
        })
    }
}

/// What [`Broker::dead_letters`] read from a DLQ.
#[derive(Debug, Default)]
pub struct DeadLetters {
    /// The dead letters, in DLQ sequence order.
    pub letters: Vec<StoredDeadLetter>,
    /// Messages in the DLQ that Sluice did not write (their envelope does not decode), as
    /// [`ErrorKind::Decode`] errors naming their sequence.
    pub skipped: Vec<Error>,
}

impl Broker {
    /// The JetStream stream of a dead-letter queue.
    pub(crate) async fn dlq_stream(&self, dlq: &ResourceRef) -> Result<stream::Stream> {
        let name = names::dlq_stream(dlq);
        self.jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| broker_err(format!("failed to look up stream {name} of DLQ {dlq}"), e))
    }

    /// Every message of a dead-letter queue, its envelope decoded, in sequence order.
    ///
    /// ```no_run
    /// # async fn run(broker: sluice_broker::Broker) -> sluice_broker::Result<()> {
    /// use sluice_broker::ResourceRef;
    /// let dlq = ResourceRef::new("shop", "orders-dlq")?;
    /// for letter in broker.dead_letters(&dlq).await?.letters {
    ///     let e = &letter.envelope;
    ///     println!("{} from {} after {} attempts: {}", letter.sequence, e.group, e.attempts, e.last_error);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the DLQ does not exist on the broker;
    /// [`ErrorKind::Unavailable`] or [`ErrorKind::Broker`] when it cannot be read. Messages
    /// whose envelope does not decode are not errors: they are listed in
    /// [`DeadLetters::skipped`].
    #[instrument(skip(self), fields(dlq = %dlq))]
    pub async fn dead_letters(&self, dlq: &ResourceRef) -> Result<DeadLetters> {
        let mut stream = self.dlq_stream(dlq).await?;
        let name = names::dlq_stream(dlq);
        let state = stream
            .info()
            .await
            .map_err(|e| broker_err(format!("failed to read stream {name} of DLQ {dlq}"), e))?
            .state
            .clone();
        let mut out = DeadLetters::default();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            let message = match stream.get_raw_message(seq).await {
                Ok(message) => message,
                Err(e) => {
                    let err = broker_err(format!("failed to read DLQ {dlq} message {seq}"), e);
                    // Deleted sequences (replayed messages) are gaps.
                    if err.kind() == ErrorKind::NotFound {
                        continue;
                    }
                    return Err(err);
                }
            };
            match StoredDeadLetter::read(dlq, message) {
                Ok(letter) => out.letters.push(letter),
                Err(e) => out.skipped.push(e),
            }
        }
        Ok(out)
    }

    /// One message of a dead-letter queue by its DLQ sequence.
    ///
    /// ```no_run
    /// # async fn run(broker: sluice_broker::Broker) -> sluice_broker::Result<()> {
    /// use sluice_broker::ResourceRef;
    /// let letter = broker.dead_letter(&ResourceRef::new("shop", "orders-dlq")?, 42).await?;
    /// println!("{}", String::from_utf8_lossy(&letter.payload));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the DLQ or the sequence does not exist (a replayed message
    /// was removed); [`ErrorKind::Decode`] when the message was not written by Sluice;
    /// [`ErrorKind::Unavailable`] or [`ErrorKind::Broker`] when it cannot be read.
    #[instrument(skip(self), fields(dlq = %dlq))]
    pub async fn dead_letter(&self, dlq: &ResourceRef, sequence: u64) -> Result<StoredDeadLetter> {
        let stream = self.dlq_stream(dlq).await?;
        let message = stream.get_raw_message(sequence).await.map_err(|e| {
            broker_err(
                format!("DLQ {dlq} has no message with sequence {sequence}"),
                e,
            )
        })?;
        StoredDeadLetter::read(dlq, message)
    }

    /// Removes one message from a dead-letter queue (after it was replayed).
    ///
    /// ```no_run
    /// # async fn run(broker: sluice_broker::Broker) -> sluice_broker::Result<()> {
    /// use sluice_broker::ResourceRef;
    /// broker.remove_dead_letter(&ResourceRef::new("shop", "orders-dlq")?, 42).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the DLQ or the sequence does not exist;
    /// [`ErrorKind::Unavailable`] or [`ErrorKind::Broker`] when the broker refused.
    #[instrument(skip(self), fields(dlq = %dlq))]
    pub async fn remove_dead_letter(&self, dlq: &ResourceRef, sequence: u64) -> Result<()> {
        let stream = self.dlq_stream(dlq).await?;
        stream.delete_message(sequence).await.map_err(|e| {
            broker_err(
                format!("failed to remove message {sequence} from DLQ {dlq}"),
                e,
            )
        })?;
        Ok(())
    }
}

/// Headers JetStream sets or interprets (`Nats-Msg-Id`, `Nats-Stream-Source` on sourced
/// messages, `Nats-Expected-*`, `Nats-TTL`, ...). They are not carried over when a message is
/// dead-lettered or replayed: the server rejects some of them on publish and would act on others.
pub fn is_jetstream_header(name: &str) -> bool {
    name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Header values may not hold CR/LF; long texts are cut at a char boundary.
fn header_safe(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    if flat.len() <= MAX_ERROR_LEN {
        return flat;
    }
    let mut cut = MAX_ERROR_LEN;
    while !flat.is_char_boundary(cut) {
        cut -= 1;
    }
    flat[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> DeadLetter {
        DeadLetter {
            source_kind: SourceKind::Topic,
            source_name: "orders".into(),
            source_subject: "sluice.t.default.orders.2".into(),
            partition: 2,
            offset: 42,
            group: "billing".into(),
            attempts: 5,
            last_error: "card declined".into(),
            first_failure: datetime!(2026-11-26 10:00:00 UTC),
            last_failure: datetime!(2026-11-26 10:00:31.5 UTC),
            original_id: "order-17".into(),
        }
    }

    #[test]
    fn round_trip_keeps_envelope_and_original_headers() {
        let mut original = HeaderMap::new();
        original.insert("traceparent", "00-abc-def-01");
        original.insert(headers::NATS_MSG_ID, "order-17");
        original.append("X-Tag", "a");
        original.append("X-Tag", "b");
        original.insert("Nats-Stream-Source", "SLUICE_T__default__orders__2 12");
        let dl = sample();
        let encoded = dl.encode(Some(&original));
        assert_eq!(DeadLetter::decode(&encoded).unwrap(), dl);
        assert_eq!(
            encoded.get("traceparent").unwrap().as_str(),
            "00-abc-def-01"
        );
        assert_eq!(
            encoded.get(headers::NATS_MSG_ID).unwrap().as_str(),
            "dlq:billing:order-17"
        );
        let replay = original_headers(&encoded);
        assert_eq!(
            replay.get(headers::NATS_MSG_ID).unwrap().as_str(),
            "order-17"
        );
        assert_eq!(replay.get_all("X-Tag").count(), 2);
        assert!(replay.get(headers::GROUP).is_none());
        // Sourced messages carry Nats-Stream-Source, which JetStream refuses on publish.
        assert!(encoded.get("Nats-Stream-Source").is_none());
        assert!(replay.get("Nats-Stream-Source").is_none());
    }

    #[test]
    fn replay_headers_derive_a_stable_id_and_keep_the_original() {
        let mut original = HeaderMap::new();
        original.insert(headers::KEY, "customer-7");
        let encoded = sample().encode(Some(&original));
        let replay = replay_headers(&encoded, 42);
        assert_eq!(
            replay.get(headers::NATS_MSG_ID).unwrap().as_str(),
            "replay:42:order-17"
        );
        assert_eq!(
            replay.get(headers::ORIGINAL_ID).unwrap().as_str(),
            "order-17"
        );
        assert_eq!(replay.get(headers::REPLAY_OF).unwrap().as_str(), "42");
        assert_eq!(replay.get(headers::KEY).unwrap().as_str(), "customer-7");
        assert!(replay.get(headers::GROUP).is_none());
        assert_eq!(
            replay_headers(&encoded, 42).get(headers::NATS_MSG_ID),
            replay.get(headers::NATS_MSG_ID)
        );
    }

    #[test]
    fn multiline_and_long_errors_are_header_safe() {
        let mut dl = sample();
        dl.last_error = format!("line1\nline2\r\n{}", "é".repeat(2000));
        let encoded = dl.encode(None);
        let back = DeadLetter::decode(&encoded).unwrap();
        assert!(!back.last_error.contains('\n'));
        assert!(back.last_error.len() <= MAX_ERROR_LEN);
    }

    #[test]
    fn foreign_messages_fail_to_decode_with_a_clear_kind() {
        let err = DeadLetter::decode(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.to_string().contains("Sluice-Source"));
    }
}
