//! The acknowledgement driver: one task per producer polls every outstanding acknowledgement,
//! resolves its [`PublishReceipt`] (or records the failure for the next flush) and frees the
//! in-flight slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::context::PublishAckFuture;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tracing::warn;

use super::error::{ProducerError, closed, publish_error};
use super::record::Published;

/// Resolves to where the message was stored once the broker acknowledges it.
///
/// Dropping a receipt does not cancel the publish; a failure is then reported by
/// [`Producer::flush`](super::Producer::flush).
#[derive(Debug)]
#[must_use = "await the receipt, or call Producer::flush, to learn whether the publish succeeded"]
pub struct PublishReceipt {
    pub(super) partition: u32,
    pub(super) rx: oneshot::Receiver<Result<Published, ProducerError>>,
}

impl PublishReceipt {
    /// The partition the message was sent to.
    ///
    /// ```no_run
    /// # async fn run(orders: sluice_worker::producer::TopicHandle) -> Result<(), sluice_worker::producer::ProducerError> {
    /// let receipt = orders.send(sluice_worker::producer::Record::new("x").key("k")).await?;
    /// println!("sent to partition {}", receipt.partition());
    /// receipt.await?;
    /// # Ok(()) }
    /// ```
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl Future for PublishReceipt {
    type Output = Result<Published, ProducerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(closed())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) in_flight: AtomicUsize,
    pub(super) peak_in_flight: AtomicUsize,
    pub(super) acked: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Failures whose receipt had been dropped: count and the first message.
    pub(super) unobserved: Mutex<(u64, Option<String>)>,
}

pub(super) type AckTask = BoxFuture<'static, ()>;

pub(super) struct AwaitAck {
    pub(super) ack: PublishAckFuture,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) tx: oneshot::Sender<Result<Published, ProducerError>>,
    pub(super) counters: Arc<Counters>,
    pub(super) partition: u32,
    pub(super) subject: Subject,
    pub(super) not_found: Arc<str>,
    pub(super) ack_timeout: Duration,
}

/// Waits for one acknowledgement, hands the result to the receipt (or records it for `flush`),
/// then frees the in-flight slot: in that order, so `flush` sees every failure.
pub(super) async fn await_ack(pending: AwaitAck) {
    let AwaitAck {
        ack,
        permit,
        tx,
        counters,
        partition,
        subject,
        not_found,
        ack_timeout,
    } = pending;
    let result = match ack.await {
        Ok(ack) => {
            counters.acked.fetch_add(1, Ordering::AcqRel);
            Ok(Published {
                partition,
                offset: ack.sequence,
                duplicate: ack.duplicate,
            })
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::AcqRel);
            Err(publish_error(e, &subject, &not_found, ack_timeout))
        }
    };
    if let Err(Err(e)) = tx.send(result) {
        warn!(error = %e, "publish failed and its receipt was dropped; reported by the next flush");
        let mut guard = counters
            .unobserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.0 += 1;
        if guard.1.is_none() {
            guard.1 = Some(e.to_string());
        }
    }
    counters.in_flight.fetch_sub(1, Ordering::AcqRel);
    drop(permit);
}

/// Polls every outstanding acknowledgement; ends once all producers are dropped and every
/// acknowledgement is resolved.
pub(super) async fn drive_acks(mut rx: mpsc::UnboundedReceiver<AckTask>) {
    let mut pending: FuturesUnordered<AckTask> = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = pending.next(), if !pending.is_empty() => {}
            next = rx.recv() => match next {
                Some(task) => pending.push(task),
                None => break,
            },
        }
    }
    while pending.next().await.is_some() {}
}
