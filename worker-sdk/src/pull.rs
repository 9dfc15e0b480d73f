//! A pinned priority-group pull with explicit flow control, for one partition's consumer.
//!
//! async-nats' pull `Stream` re-requests on its own whenever it is polled and sends nothing when
//! it is not, so a partition either prefetches without bound or stops pulling altogether (and a
//! message it still needs, e.g. a redelivery at the head of the partition, can then never
//! arrive). This puller sends the `CONSUMER.MSG.NEXT` requests itself: the caller decides how
//! many messages it wants ([`PinnedPull::refill`]), every request gets its own reply subject so
//! the server's status replies (408 expired, 409 terminated, 423 wrong pin) are accounted to
//! the request they end, and the `Nats-Pin-Id` the server hands out is sent back on the next
//! requests. On handoff the caller stops requesting and keeps the subscription until every
//! request it sent has ended ([`PinnedPull::idle`]): a message the server still delivers to a
//! pending request is then received (and handled or returned) instead of vanishing into a
//! dropped subscription, where it would wait out the ack wait and cost a delivery attempt.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::{self};
use async_nats::{StatusCode, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tracing::debug;

use crate::error::{Error, ErrorKind, Result};

/// Slack after a request's `expires` before it is presumed lost (its 408 never came, e.g.
/// after a reconnect).
const GRACE: Duration = Duration::from_secs(1);

/// What the subscription produced.
#[derive(Debug)]
pub(crate) enum Pulled {
    /// A delivered message.
    Message(Box<jetstream::Message>),
    /// A status reply that only updated the request bookkeeping.
    Status,
    /// The consumer is gone (deleted) or the subscription closed: stop using this partition.
    Ended(String),
}

#[derive(Debug)]
struct Request {
    id: u64,
    remaining: usize,
    deadline: Instant,
}

#[derive(Serialize)]
struct PullRequest<'a> {
    #[serde(flatten)]
    batch: &'a BatchConfig,
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    pin: Option<&'a str>,
}

/// Flow-controlled pull of one pinned consumer (see the module docs).
#[derive(Debug)]
pub(crate) struct PinnedPull {
    js: jetstream::Context,
    client: async_nats::Client,
    subject: String,
    inbox: String,
    sub: Subscriber,
    group: String,
    expires: Duration,
    pin: Option<String>,
    requests: VecDeque<Request>,
    next_id: u64,
    last_sent: Option<Instant>,
}

impl PinnedPull {
    /// Subscribes to a fresh inbox for pulls of `stream`/`durable` in priority group `group`.
    pub(crate) async fn open(
        js: &jetstream::Context,
        client: &async_nats::Client,
        stream: &str,
        durable: &str,
        group: &str,
        expires: Duration,
    ) -> Result<Self> {
        let inbox = client.new_inbox();
        let sub = client.subscribe(format!("{inbox}.*")).await.map_err(|e| {
            crate::error::broker(
                format!("failed to subscribe for pulls from {stream}/{durable}"),
                e,
            )
        })?;
        Ok(Self {
            js: js.clone(),
            client: client.clone(),
            subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            inbox,
            sub,
            group: group.to_string(),
            expires,
            pin: None,
            requests: VecDeque::new(),
            next_id: 0,
            last_sent: None,
        })
    }

    /// Messages requested and not delivered yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.requests.iter().map(|r| r.remaining).sum()
    }

    /// Whether no request is pending any more (safe to return messages and unpin).
    pub(crate) fn idle(&mut self) -> bool {
        self.expire();
        self.requests.is_empty()
    }

    /// When the oldest pending request must have ended at the latest.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.requests.iter().map(|r| r.deadline).min()
    }

    fn expire(&mut self) {
        let now = Instant::now();
        self.requests.retain(|r| {
            let live = r.deadline > now;
            if !live {
                debug!(request = r.id, "pull request presumed expired");
            }
            live
        });
    }

    /// Requests more messages so that up to `want` are outstanding. A new request goes out when
    /// at least half of `want` is missing (batches, not a request per message), or, with
    /// `keep_one`, when nothing at all is pending and the last request is older than `expires`
    /// (a trickle that keeps a needed redelivery reachable while the window is full).
    pub(crate) async fn refill(&mut self, want: usize, keep_one: bool) -> Result<()> {
        self.expire();
        let outstanding = self.outstanding();
        let missing = want.saturating_sub(outstanding);
        let batch = if missing > 0 && missing * 2 >= want.max(1) {
            missing
        } else if keep_one
            && self.requests.is_empty()
            && self.last_sent.is_none_or(|t| t.elapsed() >= self.expires)
        {
            1
        } else {
            return Ok(());
        };
        self.request(batch).await
    }

    async fn request(&mut self, batch: usize) -> Result<()> {
        self.next_id += 1;
        let id = self.next_id;
        let config = BatchConfig {
            batch,
            expires: Some(self.expires),
            group: Some(self.group.clone()),
            ..Default::default()
        };
        let body = serde_json::to_vec(&PullRequest {
            batch: &config,
            pin: self.pin.as_deref(),
        })
        .map_err(|e| Error::with_source(ErrorKind::Broker, "failed to encode a pull request", e))?;
        self.client
            .publish_with_reply(
                self.subject.clone(),
                format!("{}.{id}", self.inbox),
                Bytes::from(body),
            )
            .await
            .map_err(|e| {
                crate::error::broker(
                    format!("failed to send a pull request to {}", self.subject),
                    e,
                )
            })?;
        let now = Instant::now();
        self.last_sent = Some(now);
        self.requests.push_back(Request {
            id,
            remaining: batch,
            deadline: now + self.expires + GRACE,
        });
        Ok(())
    }

    fn end_request(&mut self, subject: &str) {
        let id = subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(id) = id {
            self.requests.retain(|r| r.id != id);
        }
    }

    /// Waits for the next delivery or status reply.
    pub(crate) async fn next(&mut self) -> Pulled {
        let Some(message) = self.sub.next().await else {
            return Pulled::Ended("pull subscription closed".into());
        };
        match message.status {
            None | Some(StatusCode::OK) => {
                if let Some(id) = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get_last(async_nats::header::NATS_PIN_ID))
                    && self.pin.as_deref() != Some(id.as_str())
                {
                    debug!(pin = id.as_str(), "pinned");
                    self.pin = Some(id.as_str().to_string());
                }
                if let Some(front) = self.requests.front_mut() {
                    front.remaining = front.remaining.saturating_sub(1);
                    if front.remaining == 0 {
                        self.requests.pop_front();
                    }
                }
                Pulled::Message(Box::new(jetstream::Message {
                    message,
                    context: self.js.clone(),
                }))
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Pulled::Status,
            Some(StatusCode::PIN_ID_MISMATCH) => {
                debug!("pin moved: requesting without a pin id");
                self.pin = None;
                self.end_request(message.subject.as_str());
                Pulled::Status
            }
            Some(status) => {
                let description = message.description.clone().unwrap_or_default();
                self.end_request(message.subject.as_str());
                if description.eq_ignore_ascii_case("consumer deleted") {
                    return Pulled::Ended(format!("consumer deleted ({status})"));
                }
                if status != StatusCode::TIMEOUT && status != StatusCode::NOT_FOUND {
                    debug!(%status, description, "pull request ended");
                }
                Pulled::Status
            }
        }
    }
}
