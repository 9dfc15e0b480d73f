//! Group membership and partition leases, both in KV with per-key TTL.
//!
//! - **Members**: each worker writes `names::member_key(group, member)` in
//!   [`names::MEMBERS_BUCKET`] every `ttl / 4` with a TTL of `ttl`; the value lists the
//!   partitions it owns (the operator shows it as the assignment). A crashed member's key
//!   expires and every other member sees a purge.
//! - **Leases**: the owner of partition `p` holds key `<ns>.<group>.<p>` in [`names::LEASES_BUCKET`],
//!   created only when absent (compare-and-set) and renewed with compare-and-set on its
//!   revision. The holder counts its lease valid until `3/4 ttl` after it *sent* its last
//!   successful renewal; the server can only expire the key `ttl` after it *stored* that
//!   renewal, so a member that cannot renew fences itself before anyone else can take over.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_broker::names::{self, ResourceRef};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::Result;
use crate::kv::{create_ttl, lost_race, open_bucket, put_ttl};

/// What a member publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    /// The member id as configured.
    pub member: String,
    /// Partitions it owns right now.
    pub partitions: Vec<u32>,
}

/// A partition's current lease holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseEntry {
    pub(crate) owner: String,
    pub(crate) revision: u64,
}

/// Shared handle on the group's membership and lease keys.
#[derive(Debug, Clone)]
pub(crate) struct Coordination {
    js: jetstream::Context,
    members: kv::Store,
    leases: kv::Store,
    group: ResourceRef,
    prefix: String,
    member_id: String,
    me: String,
    ttl: Duration,
}

impl Coordination {
    pub(crate) async fn open(
        js: &jetstream::Context,
        group: &ResourceRef,
        member_id: &str,
        ttl: Duration,
    ) -> Result<Self> {
        let members = open_bucket(js, sluice_broker::group::members_bucket()).await?;
        let leases = open_bucket(js, sluice_broker::group::leases_bucket()).await?;
        Ok(Self {
            js: js.clone(),
            members,
            leases,
            group: group.clone(),
            prefix: names::members_prefix(group),
            member_id: member_id.to_string(),
            me: names::escape_member(member_id),
            ttl,
        })
    }

    /// This member's identity in assignments (its escaped id).
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lease_key(&self, p: u32) -> String {
        names::lease_key(&self.group, p)
    }

    /// Writes this member's heartbeat.
    pub(crate) async fn heartbeat(&self, partitions: Vec<u32>) -> Result<()> {
        let record = MemberRecord {
            member: self.member_id.clone(),
            partitions,
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let key = names::member_key(&self.group, &self.member_id);
        put_ttl(
            &self.js,
            names::MEMBERS_BUCKET,
            &key,
            value.into(),
            None,
            self.ttl,
        )
        .await
        .map(|_| ())
        .map_err(|e| crate::error::broker(format!("failed to write heartbeat {key}"), e))
    }

    /// Removes this member's key (a clean leave).
    pub(crate) async fn leave(&self) -> Result<()> {
        let key = names::member_key(&self.group, &self.member_id);
        self.members
            .delete(&key)
            .await
            .map_err(|e| crate::error::broker(format!("failed to remove member key {key}"), e))
    }

    /// Follows the live member set (escaped member ids) until `cancel`.
    pub(crate) async fn watch_members(
        &self,
        tx: watch::Sender<BTreeMap<String, ()>>,
        cancel: CancellationToken,
    ) {
        let view = View {
            store: &self.members,
            client: self.js.client(),
            prefix: &self.prefix,
            what: "members",
        };
        // Lease-free ids only: `<ns>.<group>.<member>` has no further dots.
        let key = |id: &str| (!id.contains('.')).then(|| id.to_string());
        view.follow(key, |_: &kv::Entry| (), &tx, &cancel).await;
    }

    /// Follows the partition leases until `cancel`.
    pub(crate) async fn watch_leases(
        &self,
        tx: watch::Sender<BTreeMap<u32, LeaseEntry>>,
        cancel: CancellationToken,
    ) {
        let view = View {
            store: &self.leases,
            client: self.js.client(),
            prefix: &self.prefix,
            what: "leases",
        };
        let key = |k: &str| k.parse::<u32>().ok();
        let value = |e: &kv::Entry| LeaseEntry {
            owner: String::from_utf8_lossy(&e.value).to_string(),
            revision: e.revision,
        };
        view.follow(key, value, &tx, &cancel).await;
    }

    /// Takes partition `p`'s lease if nobody holds it; `stale` = a lease this member id holds
    /// from an earlier run (same id, no runner), taken over by compare-and-set.
    pub(crate) async fn acquire(&self, p: u32, stale: Option<u64>) -> Result<Option<Arc<Lease>>> {
        let key = self.lease_key(p);
        let sent = Instant::now();
        let revision = match stale {
            Some(rev) => put_ttl(
                &self.js,
                names::LEASES_BUCKET,
                &key,
                self.me.clone().into(),
                Some(rev),
                self.ttl,
            )
            .await
            .ok(),
            None => {
                create_ttl(
                    &self.js,
                    &self.leases,
                    names::LEASES_BUCKET,
                    &key,
                    self.me.clone().into(),
                    self.ttl,
                )
                .await?
            }
        };
        Ok(revision.map(|revision| {
            debug!(partition = p, revision, "lease acquired");
            Arc::new(Lease {
                partition: p,
                key,
                state: Mutex::new((revision, sent + self.validity())),
                fenced: CancellationToken::new(),
            })
        }))
    }

    fn validity(&self) -> Duration {
        self.ttl * 3 / 4
    }

    /// Renews `lease` every `ttl / 4` until `stop`; fences it when renewal fails or is late.
    pub(crate) async fn keep_lease(&self, lease: Arc<Lease>, stop: CancellationToken) {
        let interval = self.ttl / 4;
        loop {
            let deadline = lease.deadline();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(partition = lease.partition, "lease not renewed in time: fencing");
                    lease.fenced.cancel();
                    return;
                }
                _ = tokio::time::sleep(interval) => {}
            }
            let sent = Instant::now();
            let revision = lease.revision();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(partition = lease.partition, "lease renewal too slow: fencing");
                    lease.fenced.cancel();
                    return;
                }
                r = put_ttl(&self.js, names::LEASES_BUCKET, &lease.key, self.me.clone().into(), Some(revision), self.ttl) => r,
            };
            match result {
                Ok(rev) => lease.renewed(rev, sent + self.validity()),
                Err(e) if lost_race(&e) => {
                    warn!(
                        partition = lease.partition,
                        "lease taken over by another member: fencing"
                    );
                    lease.fenced.cancel();
                    return;
                }
                Err(e) => {
                    warn!(partition = lease.partition, error = %e, "lease renewal failed, retrying")
                }
            }
        }
    }

    /// Gives a lease back so the next owner can start at once.
    pub(crate) async fn release(&self, lease: &Lease) {
        let revision = lease.revision();
        match self
            .leases
            .delete_expect_revision(&lease.key, Some(revision))
            .await
        {
            Ok(()) => info!(partition = lease.partition, "partition released"),
            Err(e) => {
                warn!(partition = lease.partition, error = %e, "failed to release lease (it expires on its own)")
            }
        }
    }
}

/// How often a view is rebuilt from a fresh snapshot even when nothing looked wrong.
const RESYNC: Duration = Duration::from_secs(30);
/// How often the connection is checked for a reconnect (which rebuilds the views).
const RECONNECT_CHECK: Duration = Duration::from_secs(1);
/// How long a snapshot may pause between two entries before what arrived counts as complete.
const SNAPSHOT_IDLE: Duration = Duration::from_secs(5);

/// The live keys under one group's prefix in a KV bucket, followed into a watch channel.
///
/// Every (re)start of the KV watch rebuilds the map from a fresh snapshot and replaces it
/// whole: a watch resumed after an outage cannot see the expiry markers of keys that expired
/// meanwhile (the server removes them after a few seconds), so patching the old map would keep
/// ghost members and owners whose partitions nobody consumes. The watch is restarted when it
/// ends or fails, when the client reconnected (async-nats resumes a KV watch where it left off,
/// which is not a snapshot), and every [`RESYNC`] as a safety net.
struct View<'a> {
    store: &'a kv::Store,
    client: async_nats::Client,
    prefix: &'a str,
    what: &'static str,
}

impl View<'_> {
    async fn follow<K: Ord, V: PartialEq>(
        &self,
        key: impl Fn(&str) -> Option<K>,
        value: impl Fn(&kv::Entry) -> V,
        tx: &watch::Sender<BTreeMap<K, V>>,
        cancel: &CancellationToken,
    ) {
        let stats = self.client.statistics();
        let filter = format!("{}>", self.prefix);
        loop {
            let connects = stats.connects.load(AtomicOrdering::Relaxed);
            let started = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.snapshot(&filter, &key, &value) => r,
            };
            match started {
                Ok((snapshot, mut watch)) => {
                    debug!(
                        view = self.what,
                        entries = snapshot.len(),
                        "view rebuilt from a snapshot"
                    );
                    tx.send_if_modified(|map| {
                        let changed = *map != snapshot;
                        *map = snapshot;
                        changed
                    });
                    let resync = tokio::time::sleep(RESYNC);
                    tokio::pin!(resync);
                    let mut check = tokio::time::interval(RECONNECT_CHECK);
                    loop {
                        let entry = tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = &mut resync => break,
                            _ = check.tick() => {
                                if stats.connects.load(AtomicOrdering::Relaxed) != connects {
                                    info!(view = self.what, "reconnected to the broker: rebuilding the view");
                                    break;
                                }
                                continue;
                            }
                            e = watch.next() => e,
                        };
                        match entry {
                            Some(Ok(entry)) => {
                                tx.send_if_modified(|map| {
                                    apply(map, &entry, self.prefix, &key, &value)
                                });
                            }
                            Some(Err(e)) => {
                                warn!(view = self.what, error = %e, "watch failed: rebuilding the view");
                                break;
                            }
                            None => {
                                warn!(view = self.what, "watch ended: rebuilding the view");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(view = self.what, error = %e, "failed to read the view, retrying")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// A fresh snapshot of the live keys and the watch that continues after it.
    async fn snapshot<K: Ord, V: PartialEq>(
        &self,
        filter: &str,
        key: &impl Fn(&str) -> Option<K>,
        value: &impl Fn(&kv::Entry) -> V,
    ) -> std::result::Result<(BTreeMap<K, V>, kv::Watch), String> {
        // How many keys the snapshot holds (the watch gives no end marker when it is empty).
        let expected = self
            .store
            .stream
            .info_with_subjects(filter)
            .await
            .map_err(|e| format!("failed to list {}: {e}", self.what))?
            .count()
            .await;
        let mut watch = self
            .store
            .watch_with_history(filter)
            .await
            .map_err(|e| format!("failed to watch {}: {e}", self.what))?;
        let mut map = BTreeMap::new();
        let mut seen = 0usize;
        while seen < expected {
            match tokio::time::timeout(SNAPSHOT_IDLE, watch.next()).await {
                Ok(Some(Ok(entry))) => {
                    seen += 1;
                    apply(&mut map, &entry, self.prefix, key, value);
                    if entry.seen_current {
                        break;
                    }
                }
                Ok(Some(Err(e))) => return Err(format!("failed to read {}: {e}", self.what)),
                Ok(None) => return Err(format!("watch of {} ended", self.what)),
                Err(_) => {
                    debug!(
                        view = self.what,
                        seen, expected, "snapshot went quiet: using what arrived"
                    );
                    break;
                }
            }
        }
        Ok((map, watch))
    }
}

/// Applies one watched entry to a view; whether it changed.
fn apply<K: Ord, V: PartialEq>(
    map: &mut BTreeMap<K, V>,
    entry: &kv::Entry,
    prefix: &str,
    key: &impl Fn(&str) -> Option<K>,
    value: &impl Fn(&kv::Entry) -> V,
) -> bool {
    let Some(k) = entry.key.strip_prefix(prefix).and_then(key) else {
        return false;
    };
    match entry.operation {
        kv::Operation::Put => {
            let v = value(entry);
            if map.get(&k) == Some(&v) {
                return false;
            }
            map.insert(k, v);
            true
        }
        kv::Operation::Delete | kv::Operation::Purge => map.remove(&k).is_some(),
    }
}

/// Proof of owning one partition, valid until its deadline.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) partition: u32,
    key: String,
    state: Mutex<(u64, Instant)>,
    /// Cancelled when ownership can no longer be proven.
    pub(crate) fenced: CancellationToken,
}

impl Lease {
    fn revision(&self) -> u64 {
        self.state.lock().map(|s| s.0).unwrap_or(0)
    }

    fn deadline(&self) -> Instant {
        self.state
            .lock()
            .map(|s| s.1)
            .unwrap_or_else(|_| Instant::now())
    }

    fn renewed(&self, revision: u64, deadline: Instant) {
        if let Ok(mut s) = self.state.lock() {
            *s = (revision, deadline);
        }
    }

    /// Whether ownership is proven right now.
    pub(crate) fn is_valid(&self) -> bool {
        !self.fenced.is_cancelled() && Instant::now() < self.deadline()
    }
}
