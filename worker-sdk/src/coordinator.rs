//! The rebalance loop of a topic group: follow members, leases and config; compute the target
//! assignment (see [`crate::assignment`]); revoke partitions this member should no longer own
//! (their runners drain and release), acquire partitions it should own once their lease is
//! free, and publish heartbeats listing what it owns.
//!
//! Handoff is revoke-then-assign: the new owner can only create the lease after the old owner
//! deleted it (clean) or it expired (crash), so two members never run the same partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::assignment::{assign, partitions_of};
use crate::error::Result;
use crate::membership::{Coordination, LeaseEntry};
use crate::partition::{RunEnd, run_partition};
use crate::process::Shared;

/// Runs the group member until `shutdown`, then drains every partition and leaves.
pub(crate) async fn run_topic_member(
    shared: Arc<Shared>,
    coord: Coordination,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> Result<()> {
    let watches = CancellationToken::new();
    let (members_tx, mut members_rx) = watch::channel(BTreeMap::<String, ()>::new());
    let (leases_tx, mut leases_rx) = watch::channel(BTreeMap::<u32, LeaseEntry>::new());
    let mut background = JoinSet::new();
    {
        let c = coord.clone();
        let w = watches.clone();
        background.spawn(async move { c.watch_members(members_tx, w).await });
        let c = coord.clone();
        let w = watches.clone();
        background.spawn(async move { c.watch_leases(leases_tx, w).await });
    }
    let mut config_rx = shared.config.clone();
    let mut runners: HashMap<u32, CancellationToken> = HashMap::new();
    let mut tasks: JoinSet<(u32, Result<RunEnd>)> = JoinSet::new();
    // Which partition each runner task runs, to notice a runner that died (panicked).
    let mut task_partition: HashMap<tokio::task::Id, u32> = HashMap::new();
    let mut cooldown: HashMap<u32, Instant> = HashMap::new();
    let me = coord.me().to_string();
    let beat = coord.ttl() / 4;
    let mut next_beat = Instant::now();
    if let Err(e) = coord.heartbeat(Vec::new()).await {
        warn!(error = %e, "first heartbeat failed, retrying");
    }
    info!(member = %me, "joined the group");
    loop {
        let partitions = config_rx.borrow().source.partitions;
        let members: BTreeSet<String> = members_rx.borrow().keys().cloned().collect();
        let leases = leases_rx.borrow().clone();
        if members.contains(&me) {
            let owners: BTreeMap<u32, String> =
                leases.iter().map(|(p, l)| (*p, l.owner.clone())).collect();
            let target = assign(partitions, &members, &owners);
            let mine = partitions_of(&target, &me);
            for (p, stop) in &runners {
                if !mine.contains(p) && !stop.is_cancelled() {
                    info!(partition = p, "revoking partition (rebalance)");
                    stop.cancel();
                }
            }
            for p in mine {
                if runners.contains_key(&p) || cooldown.get(&p).is_some_and(|t| *t > Instant::now())
                {
                    continue;
                }
                let stale = match leases.get(&p) {
                    None => None,
                    Some(l) if l.owner == me => Some(l.revision),
                    Some(_) => continue,
                };
                match coord.acquire(p, stale).await {
                    Ok(Some(lease)) => {
                        let stop = CancellationToken::new();
                        runners.insert(p, stop.clone());
                        let (s, c) = (shared.clone(), coord.clone());
                        let task = tasks.spawn(async move {
                            (p, run_partition(s, c, lease, stop, drain_timeout).await)
                        });
                        task_partition.insert(task.id(), p);
                        next_beat = Instant::now();
                    }
                    Ok(None) => debug!(partition = p, "lease still held, waiting"),
                    Err(e) => warn!(partition = p, error = %e, "failed to take the lease"),
                }
            }
        }
        if Instant::now() >= next_beat {
            let mut owned: Vec<u32> = runners.keys().copied().collect();
            owned.sort_unstable();
            if let Err(e) = coord.heartbeat(owned).await {
                warn!(error = %e, "heartbeat failed");
            }
            next_beat = Instant::now() + beat;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = members_rx.changed() => if r.is_err() { break },
            r = leases_rx.changed() => if r.is_err() { break },
            r = config_rx.changed() => if r.is_err() { break },
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                match joined {
                    Ok((id, (p, end))) => {
                        task_partition.remove(&id);
                        runners.remove(&p);
                        match end {
                            Ok(end) => debug!(partition = p, ?end, "partition run ended"),
                            Err(e) => {
                                warn!(partition = p, error = %e, "partition run failed, retrying soon");
                                cooldown.insert(p, Instant::now() + Duration::from_secs(1));
                            }
                        }
                    }
                    Err(e) => {
                        // A runner that died must not keep its partition from being consumed:
                        // its lease lapses (renewal died with it) and the partition is taken
                        // again.
                        if let Some(p) = task_partition.remove(&e.id()) {
                            warn!(partition = p, error = %e, "partition runner died, restarting it soon");
                            runners.remove(&p);
                            cooldown.insert(p, Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next_beat) => {}
        }
    }
    info!(
        partitions = runners.len(),
        "shutting down: draining partitions"
    );
    for stop in runners.values() {
        stop.cancel();
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((p, Err(e))) = joined {
            warn!(partition = p, error = %e, "partition failed while draining");
        }
    }
    watches.cancel();
    while background.join_next().await.is_some() {}
    if let Err(e) = coord.leave().await {
        warn!(error = %e, "failed to remove the member key (it expires on its own)");
    }
    info!(member = %me, "left the group");
    Ok(())
}
