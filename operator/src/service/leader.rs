//! Leader election on a `coordination.k8s.io/v1` Lease: several operator replicas run, one
//! holds the lease and runs the controllers, the others wait as hot standbys.
//!
//! The algorithm is client-go's: the holder renews `spec.renewTime` every
//! [`LeaderConfig::renew_interval`]; a candidate takes the lease over only after it has seen
//! the *same* lease record unchanged for the lease duration on its own monotonic clock (so
//! clock skew between nodes does not matter). Every write is a `replace` carrying the
//! `resourceVersion` read just before, so of two candidates racing for an expired lease
//! exactly one wins (the other gets 409 Conflict). A leader that cannot renew within
//! [`LeaderConfig::renew_deadline`] stops its controllers (aborting in-flight reconciles after
//! a short grace) before anyone else can take the lease over, and becomes a candidate again.
//! On shutdown the leader releases the lease so a standby takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use crate::controller::MANAGER;
use crate::controller::kube_api::API_TIMEOUT;
use crate::controller::metrics::Metrics;

/// Timing of the election.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often the leader renews and candidates retry.
    pub renew_interval: Duration,
}

impl LeaderConfig {
    /// client-go's defaults: 15s lease, 10s renew deadline, 2s retry.
    pub fn new(
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(2),
        }
    }
}

/// What a replica may do with the lease it read (pure decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No lease yet: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a live lease.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// Decides from the lease as read, how long this replica has seen that same record
/// unchanged, and the lease duration to assume when the record names none.
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    if unchanged_for >= duration {
        Step::TakeOver
    } else {
        Step::Wait {
            holder: holder.to_string(),
        }
    }
}

/// The identifying part of a lease record (holder, renew time, transitions): it changing
/// means the holder is alive.
type RecordKey = Option<(Option<String>, Option<MicroTime>, Option<i32>)>;

fn record_key(spec: Option<&LeaseSpec>) -> RecordKey {
    spec.map(|s| {
        (
            s.holder_identity.clone(),
            s.renew_time.clone(),
            s.lease_transitions,
        )
    })
}

/// One replica's side of the election.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Option<(RecordKey, Instant)>,
}

impl Elector {
    /// An elector for `config` using `client`.
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    /// Tries once to acquire or renew the lease. `Ok(true)` while this replica leads.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let name = self.config.lease_name.clone();
        let current = bounded(self.api.get_opt(&name)).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let key = record_key(spec);
        let now = Instant::now();
        let unchanged_for = match &self.observed {
            Some((seen, at)) if *seen == key => now.duration_since(*at),
            _ => {
                self.observed = Some((key, now));
                Duration::ZERO
            }
        };
        let step = decide(
            spec,
            &self.config.identity,
            unchanged_for,
            self.config.lease_duration,
        );
        let stamp = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..PostParams::default()
        };
        let result = match (step, current) {
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                bounded(self.api.create(&params, &lease)).await
            }
            (Step::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = Some(duration);
                bounded(self.api.replace(&name, &params, &lease)).await
            }
            (Step::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.config.identity.clone());
                spec.acquire_time = Some(stamp.clone());
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = Some(duration);
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                bounded(self.api.replace(&name, &params, &lease)).await
            }
            (Step::Wait { .. }, _) | (_, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            // Someone else wrote first (409) or created it first: not leading this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (holder cleared) if this replica holds it.
    pub async fn release(&mut self) {
        let name = self.config.lease_name.clone();
        let Ok(Some(mut lease)) = bounded(self.api.get_opt(&name)).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match bounded(self.api.replace(&name, &PostParams::default(), &lease)).await {
            Ok(_) => info!(lease = %name, "released the leader lease"),
            Err(e) => {
                warn!(error = %e, "failed to release the leader lease; a standby takes over when it expires")
            }
        }
    }
}

async fn bounded<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    tokio::time::timeout(API_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("leader lease request timed out after {API_TIMEOUT:?}").into(),
            ))
        })
}

/// How long a deposed leader's in-flight reconciles may finish before they are aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A future that completes when the controllers must stop.
pub type Stop = std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Campaigns for the lease until `shutdown`; while leading, runs `lead(stop)` and stops it
/// (completing `stop`) when the lease is lost or on shutdown.
pub async fn run<F, Fut>(
    mut elector: Elector,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
    mut lead: F,
) where
    F: FnMut(Stop) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let interval = elector.config().renew_interval;
    let deadline = elector.config().renew_deadline;
    loop {
        // Candidate.
        metrics.set_leader(false);
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot read or write the leader lease"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
        info!(identity = %elector.config().identity, "became the leader; starting controllers");
        metrics.set_leader(true);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop: Stop = Box::pin(async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        });
        let mut task = tokio::spawn(lead(stop));
        let mut renewed = Instant::now();
        let shutting_down = loop {
            tokio::select! {
                () = &mut shutdown => break true,
                _ = &mut task => {
                    warn!("controllers stopped on their own; giving up the lease");
                    break false;
                }
                () = tokio::time::sleep(interval) => {
                    // Each attempt is bounded by what is left of the renew deadline (as in
                    // client-go), not by the API timeout: a renew hanging past the deadline
                    // must not keep this replica reconciling after another may have taken
                    // the lease over.
                    let left = deadline.saturating_sub(renewed.elapsed());
                    match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                        Ok(Ok(true)) => renewed = Instant::now(),
                        Ok(Ok(false)) => {
                            warn!("lost the leader lease to another replica");
                            break false;
                        }
                        Err(_) => {
                            warn!(?deadline, "renewing the leader lease did not finish within the renew deadline");
                            break false;
                        }
                        Ok(Err(e)) if renewed.elapsed() >= deadline => {
                            warn!(error = %e, "cannot renew the leader lease within the deadline");
                            break false;
                        }
                        Ok(Err(e)) => warn!(error = %e, "renewing the leader lease failed; retrying"),
                    }
                }
            }
        };
        metrics.set_leader(false);
        let _ = tx.send(true);
        let grace = if shutting_down {
            crate::controller::runtime::RECONCILE_TIMEOUT
        } else {
            STOP_GRACE
        };
        if !task.is_finished() && tokio::time::timeout(grace, &mut task).await.is_err() {
            warn!("aborting in-flight reconciles");
            task.abort();
        }
        elector.release().await;
        if shutting_down {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    /// A leader whose renew requests hang stops leading once the renew deadline passes, well
    /// before the lease (and before the 30 s API timeout).
    #[tokio::test]
    async fn a_hanging_renew_stops_leading_at_the_renew_deadline() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut n = 0;
            while let Some((request, respond)) = handle.next_request().await {
                n += 1;
                let (code, body) = match n {
                    // Candidate: no lease yet, then it is created.
                    1 => (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404}),
                    ),
                    2 => {
                        let bytes = request.into_body().collect_bytes().await.unwrap();
                        let mut lease: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                        lease["metadata"]["resourceVersion"] = "1".into();
                        (201, lease)
                    }
                    // Leader: every later request hangs.
                    _ => {
                        held.push(respond);
                        continue;
                    }
                };
                respond.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        let client = Client::new(service, "default");
        let mut config = LeaderConfig::new("default", "sluice-operator-leader", "me");
        config.renew_deadline = Duration::from_secs(2);
        config.renew_interval = Duration::from_millis(200);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let mut started_tx = Some(started_tx);
        let mut stopped_tx = Some(stopped_tx);
        let runner = tokio::spawn(run(
            Elector::new(client, config.clone()),
            Arc::new(Metrics::default()),
            std::future::pending(),
            move |stop| {
                let started = started_tx.take();
                let stopped = stopped_tx.take();
                async move {
                    if let Some(s) = started {
                        let _ = s.send(Instant::now());
                    }
                    stop.await;
                    if let Some(s) = stopped {
                        let _ = s.send(Instant::now());
                    }
                }
            },
        ));
        let started = started_rx.await.unwrap();
        let stopped = stopped_rx.await.unwrap();
        runner.abort();
        let led = stopped.duration_since(started);
        assert!(
            led < config.lease_duration,
            "led for {led:?} without renewing; the lease is {:?}",
            config.lease_duration
        );
    }

    #[test]
    fn creates_renews_waits_and_takes_over() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Step::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), Some(15))), "a", Duration::ZERO, D),
            Step::Renew
        );
        assert_eq!(
            decide(
                Some(&lease(Some("b"), Some(15))),
                "a",
                Duration::from_secs(14),
                D
            ),
            Step::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(
                Some(&lease(Some("b"), Some(15))),
                "a",
                Duration::from_secs(15),
                D
            ),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, Some(15))), "a", Duration::ZERO, D),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), None)), "a", Duration::ZERO, D),
            Step::TakeOver
        );
    }

    #[test]
    fn the_records_own_duration_wins() {
        let short = lease(Some("b"), Some(1));
        assert_eq!(
            decide(Some(&short), "a", Duration::from_secs(1), D),
            Step::TakeOver
        );
        let unset = lease(Some("b"), None);
        assert_eq!(
            decide(Some(&unset), "a", Duration::from_secs(5), D),
            Step::Wait { holder: "b".into() }
        );
    }
}
