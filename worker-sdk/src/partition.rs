//! Owning one topic partition: pull (pinned priority group, flow-controlled, see
//! [`crate::pull`]), restore offset order, dispatch to the handler by ordering mode, keep held
//! messages alive with progress acks, and hand the partition over cleanly or stop at once when
//! the lease is fenced.
//!
//! Prefetch: the window of fetched-but-unfinished messages follows the measured handling rate
//! (about [`WINDOW_TIME`] of work, between [`MIN_WINDOW`] and [`MAX_WINDOW`] messages,
//! measured every [`TICK`]), so a
//! fast handler is never starved and a slow one does not sit on messages another member could
//! take over.
//!
//! Clean handoff: stop requesting, keep receiving and handling in order until every pull
//! request sent has ended (nothing can then be delivered into a dropped subscription), finish
//! running handlers, return what was never started with a NAK (each costs a JetStream delivery,
//! see the crate docs on attempts), wait until the server counted the acks, unpin, release.
//!
//! Offset order: the next offset to dispatch starts at the consumer's ack floor + 1. A
//! delivery beyond it waits in a reorder buffer; a delivery below it is a duplicate (acked if
//! it was completed, ignored if still running). A gap (messages deleted by retention, or the
//! group's start position) is skipped once the consumer reports no unacknowledged deliveries
//! other than the ones this member holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, AckKind};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sluice_broker::config::Ordering;
use sluice_broker::dlq::headers;
use sluice_broker::names;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::Result;
use crate::membership::{Coordination, Lease};
use crate::process::{
    Origin, Outcome, Shared, dead_letter_exhausted, max_deliveries_subject, open_group_consumer,
    parse_max_deliveries, process,
};
use crate::pull::{PinnedPull, Pulled};

/// Fewest messages a partition keeps fetched ahead (also the window before a rate is known).
const MIN_WINDOW: usize = 16;
/// The window before the first rate measurement.
const INITIAL_WINDOW: usize = 64;
/// Most messages a partition keeps fetched and unfinished.
const MAX_WINDOW: usize = 1024;
/// The window holds about this much work at the measured handling rate.
const WINDOW_TIME: Duration = Duration::from_millis(500);
/// How often the handling rate is measured (a gap at the head is looked at every fifth tick).
const TICK: Duration = Duration::from_millis(50);

/// How a partition run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// Handed over cleanly (revoked or shut down).
    Released,
    /// Ownership could not be proven; stopped without acknowledging anything more.
    Fenced,
}

type Inflight = FuturesUnordered<BoxFuture<'static, (u64, Option<String>, Outcome)>>;

struct Held {
    msg: jetstream::Message,
    touched: Instant,
}

fn seq_of(msg: &jetstream::Message) -> Option<u64> {
    msg.info().ok().map(|i| i.stream_sequence)
}

/// The message key (`Sluice-Key` header) of a delivery, if its producer set one.
fn message_key(msg: &jetstream::Message) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(headers::KEY))
        .map(|v| v.as_str().to_string())
}

/// Runs partition `lease.partition` until `stop` (clean handoff) or fencing.
pub(crate) async fn run_partition(
    shared: Arc<Shared>,
    coord: Coordination,
    lease: Arc<Lease>,
    stop: CancellationToken,
    drain_timeout: Duration,
) -> Result<RunEnd> {
    let p = lease.partition;
    let span = info_span!("sluice.partition", partition = p);
    let renew_stop = CancellationToken::new();
    let mut renew = AbortOnDrop(tokio::spawn(
        coord
            .clone()
            .keep_lease_owned(lease.clone(), renew_stop.clone()),
    ));
    let result = Runner::start(shared, lease.clone(), stop, drain_timeout)
        .instrument(span.clone())
        .await;
    let end = match result {
        Ok(mut runner) => runner.run().instrument(span.clone()).await,
        Err(e) => Err(e),
    };
    renew_stop.cancel();
    let _ = (&mut renew.0).await;
    match &end {
        Ok(RunEnd::Released) | Err(_) => {
            if lease.is_valid() {
                coord.release(&lease).await;
            }
        }
        Ok(RunEnd::Fenced) => {}
    }
    end
}

/// Aborts a background task when its owner is dropped (a cancelled run leaves nothing behind).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Coordination {
    async fn keep_lease_owned(self, lease: Arc<Lease>, stop: CancellationToken) {
        self.keep_lease(lease, stop).await;
    }
}

struct Runner {
    shared: Arc<Shared>,
    lease: Arc<Lease>,
    stop: CancellationToken,
    drain_timeout: Duration,
    stream: jetstream::stream::Stream,
    consumer: PullConsumer,
    durable: String,
    stream_name: Arc<str>,
    ordering: Ordering,
    pull: PinnedPull,
    pull_closed: bool,
    window: usize,
    completed: u64,
    rate: f64,
    next: u64,
    buffer: BTreeMap<u64, Held>,
    fifo: VecDeque<(u64, Held)>,
    lanes: HashMap<String, VecDeque<(u64, Held)>>,
    busy: HashSet<String>,
    inflight: Inflight,
    inflight_seqs: HashSet<u64>,
    gap_since: Option<Instant>,
    /// An ordered run handed a message back (it stopped while the message waited): nothing
    /// after it may start, or order would break.
    blocked: bool,
    /// Offsets the server gave up on (max deliveries advisory) that the head may skip once
    /// they are dead-lettered.
    exhausted: BTreeSet<u64>,
    /// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES` of this consumer.
    advisories: async_nats::Subscriber,
}

impl Runner {
    async fn start(
        shared: Arc<Shared>,
        lease: Arc<Lease>,
        stop: CancellationToken,
        drain_timeout: Duration,
    ) -> Result<Self> {
        let cfg = shared.config.borrow().clone();
        let p = lease.partition;
        let source = cfg.source_ref()?;
        let stream_name = names::topic_stream(&source, p);
        let durable = names::group_consumer(&cfg.group_ref()?);
        let (stream, consumer) =
            open_group_consumer(&shared, "partition stream", &stream_name, &durable).await?;
        let info = consumer.get_info().await.map_err(|e| {
            crate::error::broker(
                format!("failed to read consumer {stream_name}/{durable}"),
                e,
            )
        })?;
        let next = info.ack_floor.stream_sequence + 1;
        let pin = Duration::from_millis(cfg.pin_timeout_ms);
        let expires = (pin / 3).clamp(Duration::from_millis(250), Duration::from_secs(1));
        let pull = PinnedPull::open(
            &shared.js,
            &shared.client,
            &stream_name,
            &durable,
            names::PRIORITY_GROUP,
            expires,
        )
        .await?;
        // Messages whose last delivery was returned unfinished (a crash, a fence) are never
        // delivered again; the server says so once, to whoever pulls.
        let advisory_subject = max_deliveries_subject(&stream_name, &durable);
        let advisories = shared
            .client
            .subscribe(advisory_subject.clone())
            .await
            .map_err(|e| {
                crate::error::broker(format!("failed to subscribe to {advisory_subject}"), e)
            })?;
        info!(partition = p, next_offset = next, "partition acquired");
        Ok(Self {
            ordering: cfg.ordering,
            shared,
            lease,
            stop,
            drain_timeout,
            stream,
            consumer,
            durable,
            stream_name: stream_name.into(),
            pull,
            pull_closed: false,
            window: INITIAL_WINDOW,
            completed: 0,
            rate: 0.0,
            next,
            buffer: BTreeMap::new(),
            fifo: VecDeque::new(),
            lanes: HashMap::new(),
            busy: HashSet::new(),
            inflight: FuturesUnordered::new(),
            inflight_seqs: HashSet::new(),
            gap_since: None,
            blocked: false,
            exhausted: BTreeSet::new(),
            advisories,
        })
    }

    /// Fetched messages not started yet.
    fn queued(&self) -> usize {
        self.buffer.len() + self.fifo.len() + self.lanes.values().map(VecDeque::len).sum::<usize>()
    }

    /// Fetched messages not finished yet.
    fn held(&self) -> usize {
        self.queued() + self.inflight.len()
    }

    /// Follows the handling rate: the window holds about [`WINDOW_TIME`] of work.
    fn adapt_window(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let now = self.completed as f64 / secs;
        self.completed = 0;
        self.rate = if self.rate == 0.0 {
            now
        } else {
            0.5 * self.rate + 0.5 * now
        };
        // While a full window waits on a slow handler the rate says little: keep the window.
        if now > 0.0 || self.held() == 0 {
            let w = (self.rate * WINDOW_TIME.as_secs_f64()) as usize;
            self.window = w.clamp(MIN_WINDOW, MAX_WINDOW);
        }
    }

    fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.shared.config.borrow().ack_wait_ms)
    }

    async fn run(&mut self) -> Result<RunEnd> {
        let mut progress = tokio::time::interval(self.ack_wait() / 3);
        let mut tick = tokio::time::interval(TICK);
        let mut last_tick = Instant::now();
        let mut ticks = 0u32;
        loop {
            self.pump();
            // A missing head (a redelivery the partition waits for) must stay reachable even
            // when the window is full of later offsets: keep a trickle of requests going.
            let head_missing = self.gap_since.is_some();
            let want = self.window.saturating_sub(self.held());
            if let Err(e) = self.pull.refill(want, head_missing).await {
                warn!(error = %e, "pull request failed, retrying");
            }
            tokio::select! {
                biased;
                _ = self.lease.fenced.cancelled() => return Ok(self.fence().await),
                _ = self.stop.cancelled() => break,
                Some((seq, key, outcome)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    if outcome == Outcome::Fenced {
                        return Ok(self.fence().await);
                    }
                    self.completed(seq, key, outcome);
                }
                Some(advisory) = self.advisories.next() => self.exhausted_advisory(&advisory.payload),
                p = self.pull.next() => {
                    self.pulled(p).await;
                    // Take what already arrived in one go (one pass of the loop per batch,
                    // not per message).
                    for _ in 0..MIN_WINDOW {
                        if self.pull_closed {
                            break;
                        }
                        match self.pull.next().now_or_never() {
                            Some(p) => self.pulled(p).await,
                            None => break,
                        }
                    }
                    if self.pull_closed {
                        break;
                    }
                }
                _ = progress.tick() => self.touch_held().await,
                // Also where lost pull requests expire (see `PinnedPull::refill`).
                _ = tick.tick() => {
                    self.adapt_window(last_tick.elapsed());
                    last_tick = Instant::now();
                    ticks = ticks.wrapping_add(1);
                    if self.gap_since.is_some() && ticks.is_multiple_of(5) {
                        self.check_gap().await;
                    }
                }
            }
        }
        self.drain().await
    }

    async fn pulled(&mut self, p: Pulled) {
        match p {
            Pulled::Message(m) => self.receive(*m).await,
            Pulled::Status => {}
            Pulled::Ended(why) => {
                warn!(reason = %why, "pull ended: giving the partition up");
                self.pull_closed = true;
            }
        }
    }

    fn completed(&mut self, seq: u64, key: Option<String>, outcome: Outcome) {
        if outcome == Outcome::Unfinished && self.ordering != Ordering::None {
            debug!(
                offset = seq,
                "message handed back: starting nothing after it"
            );
            self.blocked = true;
        }
        self.completed += 1;
        self.inflight_seqs.remove(&seq);
        if let Some(k) = key {
            self.busy.remove(&k);
        }
    }

    /// The server gave a message up (its last delivery was returned unfinished): dead-letter it
    /// from the stream, and let an ordered head skip it once that is done.
    fn exhausted_advisory(&mut self, payload: &[u8]) {
        let Some((seq, deliveries)) = parse_max_deliveries(payload) else {
            debug!("unreadable max-deliveries advisory: ignored");
            return;
        };
        warn!(
            offset = seq,
            deliveries, "last delivery of a message was never finished: dead-lettering it"
        );
        let (shared, stream, stream_name) = (
            self.shared.clone(),
            self.stream.clone(),
            self.stream_name.clone(),
        );
        let partition = self.lease.partition;
        self.inflight.push(Box::pin(async move {
            let origin = Origin {
                partition,
                stream: &stream_name,
                in_place: false,
            };
            let outcome = dead_letter_exhausted(&shared, &stream, origin, seq, deliveries).await;
            (seq, None, outcome)
        }));
        if self.ordering != Ordering::None && seq >= self.next {
            self.exhausted.insert(seq);
        }
    }

    async fn receive(&mut self, msg: jetstream::Message) {
        let Some(seq) = seq_of(&msg) else { return };
        let held = Held {
            msg,
            touched: Instant::now(),
        };
        if self.ordering == Ordering::None {
            if !self.inflight_seqs.contains(&seq) {
                self.fifo.push_back((seq, held));
            }
            return;
        }
        if seq < self.next {
            let in_lane = self
                .lanes
                .values()
                .any(|l| l.iter().any(|(s, _)| *s == seq));
            if !self.inflight_seqs.contains(&seq) && !in_lane {
                debug!(
                    offset = seq,
                    "duplicate delivery of a completed message: acknowledging"
                );
                if self.lease.is_valid() {
                    let _ = held.msg.ack().await;
                }
            }
            return;
        }
        self.buffer.insert(seq, held);
    }

    /// Starts whatever the ordering mode allows.
    fn pump(&mut self) {
        if self.blocked {
            return;
        }
        // Offsets the server gave up on are dead-lettered, never delivered: skip them.
        while !self.buffer.contains_key(&self.next) && self.exhausted.remove(&self.next) {
            self.next += 1;
        }
        let next = self.next;
        self.exhausted.retain(|s| *s >= next);
        let max = self.shared.config.borrow().max_concurrency.max(1) as usize;
        match self.ordering {
            Ordering::Partition => {
                if self.inflight.is_empty()
                    && let Some(entry) = self.buffer.first_entry()
                    && *entry.key() == self.next
                {
                    let (seq, held) = entry.remove_entry();
                    self.next = seq + 1;
                    self.spawn(seq, None, held.msg, true);
                }
            }
            Ordering::Key => {
                // Lanes first: their messages are older than anything in the buffer.
                let ready: Vec<String> = self
                    .lanes
                    .iter()
                    .filter(|(k, l)| !l.is_empty() && !self.busy.contains(*k))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in ready {
                    if self.inflight.len() >= max {
                        break;
                    }
                    if let Some((seq, held)) = self.lanes.get_mut(&k).and_then(VecDeque::pop_front)
                    {
                        self.busy.insert(k.clone());
                        self.spawn(seq, Some(k), held.msg, true);
                    }
                }
                self.lanes.retain(|_, l| !l.is_empty());
                while let Some(entry) = self.buffer.first_entry() {
                    if *entry.key() != self.next {
                        break;
                    }
                    let (seq, held) = entry.remove_entry();
                    self.next = seq + 1;
                    // Keyless messages have no order to keep: each is its own lane.
                    let k = message_key(&held.msg).unwrap_or_else(|| format!("\u{0}{seq}"));
                    let queued = self.lanes.get(&k).is_some_and(|l| !l.is_empty());
                    if self.busy.contains(&k) || queued || self.inflight.len() >= max {
                        self.lanes.entry(k).or_default().push_back((seq, held));
                    } else {
                        self.busy.insert(k.clone());
                        self.spawn(seq, Some(k), held.msg, true);
                    }
                }
            }
            Ordering::None => {
                while self.inflight.len() < max {
                    let Some((seq, held)) = self.fifo.pop_front() else {
                        break;
                    };
                    self.spawn(seq, None, held.msg, false);
                }
            }
        }
        let gap = self.ordering != Ordering::None
            && self
                .buffer
                .first_key_value()
                .is_some_and(|(s, _)| *s > self.next);
        match (gap, self.gap_since) {
            (true, None) => self.gap_since = Some(Instant::now()),
            (false, Some(_)) => self.gap_since = None,
            _ => {}
        }
    }

    fn spawn(&mut self, seq: u64, key: Option<String>, msg: jetstream::Message, in_place: bool) {
        self.inflight_seqs.insert(seq);
        let stop = self.stop.clone();
        let shared = self.shared.clone();
        let lease = self.lease.clone();
        let stream = self.stream_name.clone();
        let partition = lease.partition;
        self.inflight.push(Box::pin(async move {
            loop {
                let origin = Origin {
                    partition,
                    stream: &stream,
                    in_place,
                };
                let outcome = process(&shared, &msg, origin, Some(&lease), &stop).await;
                // An ordered partition cannot move past an unfinished message: try again
                // (unless it was handed back because the partition stops).
                if outcome == Outcome::Unfinished
                    && in_place
                    && lease.is_valid()
                    && !stop.is_cancelled()
                {
                    tokio::select! {
                        _ = lease.fenced.cancelled() => return (seq, key, Outcome::Fenced),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
                return (seq, key, outcome);
            }
        }));
    }

    /// Progress acks for held (fetched, not started) messages, so their ack wait does not expire.
    async fn touch_held(&mut self) {
        let limit = self.ack_wait() / 3;
        let now = Instant::now();
        let mut due: Vec<jetstream::Message> = Vec::new();
        for h in self.buffer.values_mut() {
            if now.duration_since(h.touched) >= limit {
                h.touched = now;
                due.push(h.msg.clone());
            }
        }
        for (_, h) in self.fifo.iter_mut() {
            if now.duration_since(h.touched) >= limit {
                h.touched = now;
                due.push(h.msg.clone());
            }
        }
        for lane in self.lanes.values_mut() {
            for (_, h) in lane.iter_mut() {
                if now.duration_since(h.touched) >= limit {
                    h.touched = now;
                    due.push(h.msg.clone());
                }
            }
        }
        if !self.lease.is_valid() {
            return;
        }
        for m in due {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }

    /// Skips a gap below the reorder buffer where its offsets were acknowledged (ack floor) or
    /// no longer exist in the stream (retention, deletes); otherwise keeps waiting for their
    /// redelivery.
    async fn check_gap(&mut self) {
        let Ok(info) = self.consumer.get_info().await else {
            return;
        };
        self.next = self.next.max(info.ack_floor.stream_sequence + 1);
        // Deliveries below the ack floor were acknowledged elsewhere (e.g. a deposed owner's
        // late acks): they must not stay at the head, where nothing would ever start them.
        let kept = self.buffer.split_off(&self.next);
        let below = std::mem::replace(&mut self.buffer, kept);
        if !below.is_empty() {
            debug!(
                count = below.len(),
                next_offset = self.next,
                "dropping deliveries below the ack floor (acknowledged elsewhere)"
            );
        }
        let Some((&first, _)) = self.buffer.first_key_value() else {
            return;
        };
        let mut probes = 0;
        while self.next < first && probes < 256 {
            probes += 1;
            match self.stream.get_raw_message(self.next).await {
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                    debug!(offset = self.next, "skipping a deleted offset");
                    self.next += 1;
                }
                _ => break,
            }
        }
    }

    async fn fence(&mut self) -> RunEnd {
        warn!(
            partition = self.lease.partition,
            "ownership lost: stopped handling without acknowledging"
        );
        self.inflight.clear();
        let held = self.take_queued();
        let deadline = Instant::now() + self.drain_timeout;
        self.settle_last_deliveries(held, None, deadline).await;
        RunEnd::Fenced
    }

    /// Everything fetched and not started, leaving the queues empty.
    fn take_queued(&mut self) -> Vec<Held> {
        std::mem::take(&mut self.buffer)
            .into_values()
            .chain(std::mem::take(&mut self.fifo).into_iter().map(|(_, h)| h))
            .chain(
                std::mem::take(&mut self.lanes)
                    .into_values()
                    .flat_map(|l| l.into_iter().map(|(_, h)| h)),
            )
            .collect()
    }

    /// Dead-letters the held messages that are on their last delivery (JetStream never
    /// delivers them again, so handing them back or dropping them would lose them) and returns
    /// the others. `lease` is `None` after a fence: no other member can receive these messages,
    /// so dead-lettering them needs no ownership.
    async fn settle_last_deliveries(
        &mut self,
        held: Vec<Held>,
        lease: Option<Arc<Lease>>,
        deadline: Instant,
    ) -> Vec<Held> {
        let max_deliver = self.shared.config.borrow().max_deliver();
        let (last, rest): (Vec<Held>, Vec<Held>) = held
            .into_iter()
            .partition(|h| h.msg.info().is_ok_and(|i| i.delivered >= max_deliver));
        if last.is_empty() {
            return rest;
        }
        warn!(
            count = last.len(),
            "dead-lettering held messages on their last delivery instead of handing them back"
        );
        let never = CancellationToken::new();
        for h in last {
            let origin = Origin {
                partition: self.lease.partition,
                stream: &self.stream_name,
                in_place: false,
            };
            let work = process(&self.shared, &h.msg, origin, lease.as_deref(), &never);
            if tokio::time::timeout_at(deadline, work).await.is_err() {
                warn!(
                    "out of time while dead-lettering: the next owner finishes it (max-deliveries advisory)"
                );
                break;
            }
        }
        rest
    }

    /// Clean handoff (see the module docs): nothing is requested any more; what pending
    /// requests still deliver is received, and handling in order goes on until they all ended
    /// (at most the request expiry plus grace), then running handlers finish (bounded by the
    /// drain timeout) and what was not started goes back with a NAK.
    async fn drain(&mut self) -> Result<RunEnd> {
        let hard = Instant::now() + self.drain_timeout;
        loop {
            let now = Instant::now();
            let idle = self.pull_closed || self.pull.idle();
            if !idle {
                self.pump();
            }
            if idle && self.inflight.is_empty() {
                break;
            }
            if now >= hard {
                warn!(
                    running = self.inflight.len(),
                    "drain timeout: abandoning running handlers (their messages are redelivered)"
                );
                self.inflight.clear();
                break;
            }
            let mut wake = hard;
            if let Some(d) = self.pull.next_deadline() {
                wake = wake.min(d);
            }
            tokio::select! {
                biased;
                _ = self.lease.fenced.cancelled() => return Ok(self.fence().await),
                Some((seq, key, outcome)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    if outcome == Outcome::Fenced {
                        return Ok(self.fence().await);
                    }
                    self.completed(seq, key, outcome);
                }
                Some(advisory) = self.advisories.next() => self.exhausted_advisory(&advisory.payload),
                p = self.pull.next(), if !idle => self.pulled(p).await,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Whatever could not be started goes back at once to the next owner.
        let leftovers = self.take_queued();
        // A deposed owner must not touch the new owner's deliveries, not even with a NAK.
        if !self.lease.is_valid() {
            self.settle_last_deliveries(
                leftovers,
                None,
                hard.max(Instant::now() + Duration::from_secs(5)),
            )
            .await;
            return Ok(RunEnd::Fenced);
        }
        let leftovers = self
            .settle_last_deliveries(
                leftovers,
                Some(self.lease.clone()),
                hard.max(Instant::now() + Duration::from_secs(5)),
            )
            .await;
        let left = leftovers.len();
        for h in leftovers {
            let _ = h.msg.ack_with(AckKind::Nak(None)).await;
        }
        let _ = self.shared.client.flush().await;
        // Acks are asynchronous: wait until the server counted them before letting go.
        let confirm = Instant::now() + Duration::from_secs(2);
        while Instant::now() < confirm {
            match self.consumer.get_info().await {
                Ok(info) if info.num_ack_pending <= left => break,
                Ok(_) => {}
                Err(e) => debug!(error = %e, "consumer info failed during handoff"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = self
            .stream
            .unpin_consumer(&self.durable, names::PRIORITY_GROUP)
            .await
        {
            debug!(error = %e, "unpin failed (the pin expires on its own)");
        }
        info!(
            partition = self.lease.partition,
            returned = left,
            "partition handed over"
        );
        Ok(RunEnd::Released)
    }
}
