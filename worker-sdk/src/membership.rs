//! Group membership and partition leases, both in KV with per-key TTL.
//!
//! - **Members**: each worker writes `names::member_key(group, member)` in
//!   [`names::MEMBERS_BUCKET`] every `ttl / 4` with a TTL of `ttl`; the value lists the
//!   partitions it owns (the operator shows it as the assignment). A crashed member's key
//!   expires and every other member sees a purge.
//! - **Leases**: the owner of partition `p` holds key `<ns>.<group>.<p>` in [`LEASES_BUCKET`],
//!   created only when absent (compare-and-set) and renewed with compare-and-set on its
//!   revision. The holder counts its lease valid until `3/4 ttl` after it *sent* its last
//!   successful renewal; the server can only expire the key `ttl` after it *stored* that
//!   renewal, so a member that cannot renew fences itself before anyone else can take over.

use std::collections::{BTreeMap, BTreeSet};
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

use crate::error::{Error, Result};
use crate::kv::{create_ttl, open_ttl_bucket, put_ttl};

/// KV bucket of partition leases (owned by the SDK; keys `<ns>.<group>.<partition>`).
pub const LEASES_BUCKET: &str = "SLUICE_LEASES";

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
        let members = open_ttl_bucket(
            js,
            names::MEMBERS_BUCKET,
            "Sluice consumer-group members (heartbeats with per-key TTL)",
        )
        .await?;
        let leases = open_ttl_bucket(
            js,
            LEASES_BUCKET,
            "Sluice partition leases (per-key TTL, compare-and-set)",
        )
        .await?;
        Ok(Self {
            js: js.clone(),
            members,
            leases,
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
        format!("{}{p}", self.prefix)
    }

    /// Writes this member's heartbeat.
    pub(crate) async fn heartbeat(&self, partitions: Vec<u32>) -> Result<()> {
        let record = MemberRecord {
            member: self.member_id.clone(),
            partitions,
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let key = format!("{}{}", self.prefix, self.me);
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
        .map_err(|text| {
            Error::new(
                crate::error::ErrorKind::Broker,
                format!("failed to write heartbeat {key}: {text}"),
            )
        })
    }

    /// Removes this member's key (a clean leave).
    pub(crate) async fn leave(&self) -> Result<()> {
        let key = format!("{}{}", self.prefix, self.me);
        self.members
            .delete(&key)
            .await
            .map_err(|e| Error::broker(format!("failed to remove member key {key}"), e))
    }

    /// Follows the live member set until `cancel`.
    pub(crate) async fn watch_members(
        &self,
        tx: watch::Sender<BTreeSet<String>>,
        cancel: CancellationToken,
    ) {
        let prefix = self.prefix.clone();
        let filter = format!("{prefix}>");
        loop {
            match self.members.watch_with_history(&filter).await {
                Ok(mut watch) => loop {
                    let entry = tokio::select! {
                        _ = cancel.cancelled() => return,
                        e = watch.next() => e,
                    };
                    let Some(entry) = entry else { break };
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            warn!(error = %e, "member watch error");
                            break;
                        }
                    };
                    let Some(id) = entry.key.strip_prefix(&prefix) else {
                        continue;
                    };
                    // Lease-free ids only: `<ns>.<group>.<member>` has no further dots.
                    if id.contains('.') {
                        continue;
                    }
                    let id = id.to_string();
                    tx.send_if_modified(|set| match entry.operation {
                        kv::Operation::Put => set.insert(id),
                        kv::Operation::Delete | kv::Operation::Purge => set.remove(&id),
                    });
                },
                Err(e) => warn!(error = %e, "failed to watch members, retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Follows the partition leases until `cancel`.
    pub(crate) async fn watch_leases(
        &self,
        tx: watch::Sender<BTreeMap<u32, LeaseEntry>>,
        cancel: CancellationToken,
    ) {
        let prefix = self.prefix.clone();
        let filter = format!("{prefix}>");
        loop {
            match self.leases.watch_with_history(&filter).await {
                Ok(mut watch) => loop {
                    let entry = tokio::select! {
                        _ = cancel.cancelled() => return,
                        e = watch.next() => e,
                    };
                    let Some(entry) = entry else { break };
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            warn!(error = %e, "lease watch error");
                            break;
                        }
                    };
                    let Some(Ok(p)) = entry.key.strip_prefix(&prefix).map(str::parse::<u32>) else {
                        continue;
                    };
                    let owner = String::from_utf8_lossy(&entry.value).to_string();
                    let revision = entry.revision;
                    tx.send_modify(|map| match entry.operation {
                        kv::Operation::Put => {
                            map.insert(p, LeaseEntry { owner, revision });
                        }
                        kv::Operation::Delete | kv::Operation::Purge => {
                            map.remove(&p);
                        }
                    });
                },
                Err(e) => warn!(error = %e, "failed to watch leases, retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Takes partition `p`'s lease if nobody holds it; `stale` = a lease this member id holds
    /// from an earlier run (same id, no runner), taken over by compare-and-set.
    pub(crate) async fn acquire(&self, p: u32, stale: Option<u64>) -> Result<Option<Arc<Lease>>> {
        let key = self.lease_key(p);
        let sent = Instant::now();
        let revision = match stale {
            Some(rev) => put_ttl(
                &self.js,
                LEASES_BUCKET,
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
                    LEASES_BUCKET,
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
                r = put_ttl(&self.js, LEASES_BUCKET, &lease.key, self.me.clone().into(), Some(revision), self.ttl) => r,
            };
            match result {
                Ok(rev) => lease.renewed(rev, sent + self.validity()),
                Err(text) if text.contains("wrong last sequence") || text.contains("10071") => {
                    warn!(
                        partition = lease.partition,
                        "lease taken over by another member: fencing"
                    );
                    lease.fenced.cancel();
                    return;
                }
                Err(text) => {
                    warn!(partition = lease.partition, error = %text, "lease renewal failed, retrying")
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
