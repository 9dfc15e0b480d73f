//! Broker: a NATS JetStream cluster.
//!
//! Pipeline of one reconcile:
//!
//! 1. **validate + build** (pure) — [`crate::desired::broker::cluster`] maps the spec onto the
//!    [`crate::broker_cluster`] builders; [`build`] returns the ConfigMap (nats.conf), the
//!    headless and client Services, the StatefulSet and the PodDisruptionBudget, each owned by
//!    the Broker (controller owner reference, so deleting the Broker garbage-collects them;
//!    the volumes are kept, see the StatefulSet's PVC retention policy).
//! 2. **credentials** — the Secret is created once with fresh random passwords when absent
//!    and its values are never rewritten ([`kube_api::create_if_absent`]); a user-named
//!    Secret (`auth.existingSecret`) is only read. A Secret the servers could not use is
//!    reported, never repaired. One exception keeps upgrades working: a generated Secret
//!    written before route authentication lacks `route-user` / `route-password`; the
//!    operator adds those two keys only ([`kube_api::add_secret_data`], a merge patch
//!    guarded by the resourceVersion it read), every existing key keeps its value. A
//!    user-named Secret without them is reported (`CredentialsUnusable`) for its owner to
//!    extend.
//! 3. **TLS** — [`super::broker_tls`]: the CA and server certificate (generated, or a
//!    cert-manager `Certificate`), renewed before expiry; a hash of the servers' `<name>-tls`
//!    Secret on the pod template rolls the servers when it changes.
//! 4. **scale-down guard** — when the StatefulSet runs more servers than asked for, the
//!    operator connects to the broker (operator credentials, through [`context::BrokerPool`]),
//!    reads the highest replica count of any stream and refuses (`NotSupported`, nothing
//!    applied) a size below it ([`validate_scale_down`]). Without a broker connection a
//!    scale-down waits: it is never done blind.
//! 5. **apply** — server-side apply, field manager [`super::MANAGER`], of the five objects,
//!    and of the Broker's NetworkPolicy when the operator was told where it runs
//!    ([`crate::broker_cluster::network_policy`]).
//! 6. **status** — ready servers (from the StatefulSet), the JetStream meta leader and peers
//!    (from a ready server's `/jsz`, see [`super::monitor`]), `Ready` once every server is
//!    ready.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Client, ResourceExt};
use tracing::{info, instrument, warn};

use super::broker_tls::{TLS_HASH_ANNOTATION, TlsOutcome, ensure_tls};
use super::context::ReconcileContext;
use super::monitor::{MetaGroup, meta_group};
use super::{Failure, ObjectEvent, Outcome, Requeue, conditions, kube_api, ns_name};
use crate::broker_cluster::{
    BrokerCluster, CredentialsSecretAction, MONITOR_PORT, OperatorPeer, client_service, config_map,
    credentials_secret, existing_secret_action, generate_password, headless_service,
    network_policy, pod_disruption_budget, route_data, stateful_set, validate_scale_down,
};
use crate::crd::{Broker, BrokerStatus, ConditionStatus};

/// Annotation of the server pods: a hash of the credentials Secret's data.
pub const CREDENTIALS_HASH_ANNOTATION: &str = "sluice.dev/credentials-hash";
/// How long reading a server's `/jsz` may take.
pub const MONITOR_TIMEOUT: Duration = Duration::from_secs(3);
/// Requeue while servers are starting.
pub const PROGRESS_RETRY: Duration = Duration::from_secs(10);

/// The objects of one broker cluster, built from the Broker (pure).
#[derive(Debug, Clone)]
pub struct BrokerObjects {
    /// nats.conf.
    pub config_map: ConfigMap,
    /// Routes and per-server DNS names.
    pub headless_service: Service,
    /// The client address.
    pub client_service: Service,
    /// The servers.
    pub stateful_set: StatefulSet,
    /// At most one server down by voluntary disruption.
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// Builds every applied object of `broker` (the credentials Secret is separate: it is created
/// once, never applied).
pub fn build(
    broker: &Broker,
    cluster_domain: &str,
) -> Result<(BrokerCluster, BrokerObjects), Failure> {
    let cluster = crate::desired::broker::cluster_in(broker, cluster_domain)?;
    if cluster.params().owner_reference.is_none() {
        return Err(Failure::Missing {
            reason: "NotYetStored",
            message: "the Broker has no uid yet".into(),
        });
    }
    let objects = BrokerObjects {
        config_map: config_map(&cluster),
        headless_service: headless_service(&cluster),
        client_service: client_service(&cluster),
        stateful_set: stateful_set(&cluster),
        pod_disruption_budget: pod_disruption_budget(&cluster),
    };
    Ok((cluster, objects))
}

/// What the apply step learnt, for the status.
#[derive(Debug, Default)]
struct Applied {
    ready_replicas: i32,
    secret_write: SecretWrite,
    /// The users file changed recently: the servers are asked to reload it.
    users_pending: bool,
    tls: TlsOutcome,
}

/// What a reconcile wrote to the credentials Secret.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum SecretWrite {
    /// Nothing: the Secret was usable as it was.
    #[default]
    None,
    /// Created it with fresh credentials.
    Created,
    /// Added the route credentials to a Secret that predates them.
    RouteKeysAdded,
}

/// Reconciles one Broker: credentials, scale-down guard, apply, status. `cluster_domain` is
/// the cluster's DNS domain (see [`crate::broker_cluster::DEFAULT_CLUSTER_DOMAIN`]).
#[instrument(skip_all, fields(broker = %format!("{}/{}", ns_name(broker).0, ns_name(broker).1)))]
pub async fn reconcile(
    client: &Client,
    ctx: &ReconcileContext,
    broker: &Broker,
    resync: Duration,
    cluster_domain: &str,
    network_policy_peer: Option<&OperatorPeer>,
) -> Outcome<BrokerStatus> {
    let generation = broker.metadata.generation;
    let previous = broker.status.clone().unwrap_or_default();
    let mut status = BrokerStatus {
        conditions: previous.conditions,
        observed_generation: generation,
        max_stream_replicas: previous.max_stream_replicas,
        ..BrokerStatus::default()
    };
    let mut events = Vec::new();
    let mut observed_max = None;
    let result = apply(
        client,
        ctx,
        broker,
        cluster_domain,
        network_policy_peer,
        &mut observed_max,
    )
    .await;
    if observed_max.is_some() {
        status.max_stream_replicas = observed_max;
    }
    match result {
        Ok((cluster, applied)) => {
            let secret = cluster.credentials_secret_name();
            match applied.secret_write {
                SecretWrite::None => {}
                SecretWrite::Created => events.push(ObjectEvent {
                    warning: false,
                    reason: "CredentialsCreated",
                    message: format!("generated Secret {secret} with the broker's credentials"),
                    action: None,
                }),
                SecretWrite::RouteKeysAdded => events.push(ObjectEvent {
                    warning: false,
                    reason: "RouteCredentialsAdded",
                    message: format!(
                        "added route-user and route-password to Secret {secret}; the servers restart to authenticate their routes"
                    ),
                    action: None,
                }),
            }
            if applied.tls.ca_issued {
                events.push(ObjectEvent {
                    warning: false,
                    reason: "CertificateAuthorityCreated",
                    message: format!(
                        "generated the CA of the broker's TLS in Secret {}",
                        crate::broker_cluster::ca_secret_name(cluster.name())
                    ),
                    action: None,
                });
            }
            if applied.tls.server_issued {
                events.push(ObjectEvent {
                    warning: false,
                    reason: "CertificateIssued",
                    message: format!(
                        "issued the servers' TLS certificate in Secret {}; the servers restart one at a time to load it",
                        crate::broker_cluster::tls_secret_name(cluster.name())
                    ),
                    action: None,
                });
            }
            status.ready_replicas = Some(applied.ready_replicas);
            if applied.users_pending && applied.ready_replicas > 0 {
                super::broker_users::reload(client, ctx, broker, &cluster).await;
            }
            if applied.ready_replicas > 0 {
                let meta = read_meta_group(&cluster, applied.ready_replicas).await;
                status.meta_leader = meta.leader;
                status.meta_peers = meta.peers;
            }
            let wanted = i32::from(cluster.replicas());
            let requeue = if applied.ready_replicas >= wanted {
                conditions::ready(
                    &mut status.conditions,
                    format!("all {wanted} servers are ready"),
                    generation,
                );
                Requeue::After(resync)
            } else {
                conditions::set(
                    &mut status.conditions,
                    conditions::READY,
                    ConditionStatus::False,
                    "ServersStarting",
                    format!("{} of {wanted} servers are ready", applied.ready_replicas),
                    generation,
                );
                Requeue::After(PROGRESS_RETRY.min(resync))
            };
            let requeue = match requeue {
                // Keep asking the servers to reload until the kubelet has surely synced the
                // mounted users file.
                Requeue::After(d) if applied.users_pending => {
                    Requeue::After(d.min(super::broker_users::RELOAD_RETRY))
                }
                other => other,
            };
            Outcome {
                status,
                requeue,
                events,
            }
        }
        Err(failure) => {
            warn!(reason = failure.reason(), error = %failure, "broker not reconciled");
            conditions::failed(&mut status.conditions, &failure, generation);
            status.ready_replicas = previous.ready_replicas;
            status.meta_leader = previous.meta_leader;
            status.meta_peers = previous.meta_peers;
            if matches!(failure, Failure::NotSupported { .. }) {
                events.push(ObjectEvent {
                    warning: true,
                    reason: "ScaleDownRefused",
                    message: failure.to_string(),
                    action: None,
                });
            }
            Outcome {
                requeue: failure.requeue(),
                status,
                events,
            }
        }
    }
}

/// `observed_max` receives the streams' highest replica count when it was read.
async fn apply(
    client: &Client,
    ctx: &ReconcileContext,
    broker: &Broker,
    cluster_domain: &str,
    network_policy_peer: Option<&OperatorPeer>,
    observed_max: &mut Option<u32>,
) -> Result<(BrokerCluster, Applied), Failure> {
    // validate + build
    let (cluster, objects) = build(broker, cluster_domain)?;
    let ns = cluster.namespace().to_string();
    // credentials
    let mut applied = Applied {
        secret_write: ensure_credentials(client, &cluster).await?,
        ..Applied::default()
    };
    // credentials roll the servers: the pod template carries a hash of the Secret's data, so
    // a changed `existingSecret`, a re-created Secret or edited keys restart the servers
    // (one at a time) with the new values instead of leaving them on the old ones.
    let mut objects = objects;
    let secret: Option<Secret> =
        kube_api::get_opt(client, &ns, &cluster.credentials_secret_name()).await?;
    if let Some(secret) = secret {
        let data: Vec<(String, Vec<u8>)> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let hash = kube_api::content_hash(&serde_json::to_vec(&data).unwrap_or_default());
        if let Some(template) = objects
            .stateful_set
            .spec
            .as_mut()
            .map(|s| &mut s.template.metadata)
        {
            template
                .get_or_insert_with(Default::default)
                .annotations
                .get_or_insert_with(Default::default)
                .insert(CREDENTIALS_HASH_ANNOTATION.to_string(), hash);
        }
    }
    // TLS: the certificates (issued or renewed when due) roll the servers the same way
    applied.tls = ensure_tls(client, &cluster, time::OffsetDateTime::now_utc()).await?;
    if let Some(hash) = &applied.tls.hash
        && let Some(template) = objects
            .stateful_set
            .spec
            .as_mut()
            .map(|s| &mut s.template.metadata)
    {
        template
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(TLS_HASH_ANNOTATION.to_string(), hash.clone());
    }
    // scale-down guard
    let running: Option<StatefulSet> = kube_api::get_opt(client, &ns, cluster.name()).await?;
    let running_replicas = running
        .and_then(|s| s.spec.and_then(|s| s.replicas))
        .unwrap_or(0);
    if running_replicas > i32::from(cluster.replicas()) {
        let max = max_stream_replicas(ctx, &ns, broker).await?;
        *observed_max = Some(max);
        validate_scale_down(cluster.replicas(), u8::try_from(max).unwrap_or(u8::MAX)).map_err(
            |e| Failure::NotSupported {
                message: e.message().to_string(),
                source: Some(Box::new(e)),
            },
        )?;
        info!(
            from = running_replicas,
            to = cluster.replicas(),
            max_stream_replicas = max,
            "scale-down fits every stream"
        );
    }
    // users (before the servers: their pods mount the users Secret)
    applied.users_pending = super::broker_users::apply_users(client, ctx, broker, &cluster).await?;
    // apply
    kube_api::apply(client, &objects.config_map).await?;
    kube_api::apply(client, &objects.headless_service).await?;
    kube_api::apply(client, &objects.client_service).await?;
    let sts = kube_api::apply(client, &objects.stateful_set).await?;
    kube_api::apply(client, &objects.pod_disruption_budget).await?;
    if let Some(peer) = network_policy_peer {
        kube_api::apply(client, &network_policy(&cluster, peer)).await?;
    }
    applied.ready_replicas = sts
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or_default();
    Ok((cluster, applied))
}

/// Creates the generated credentials Secret when absent; checks a present (or user-named)
/// Secret is usable. Never overwrites a value: at most adds the route keys a generated
/// Secret lacks. Returns what it wrote.
async fn ensure_credentials(
    client: &Client,
    cluster: &BrokerCluster,
) -> Result<SecretWrite, Failure> {
    let ns = cluster.namespace();
    let name = cluster.credentials_secret_name();
    let existing: Option<Secret> = kube_api::get_opt(client, ns, &name).await?;
    match existing_secret_action(existing.as_ref()) {
        CredentialsSecretAction::Keep => Ok(SecretWrite::None),
        CredentialsSecretAction::AddRouteCredentials if !cluster.generates_credentials() => {
            Err(Failure::Missing {
                reason: "CredentialsUnusable",
                message: format!(
                    "spec.auth.existingSecret: Secret {name} lacks the keys route-user and route-password the servers authenticate their cluster routes with; add them (route-user: letters, digits or '-'; route-password: at least 16 ASCII letters and digits, starting with a letter)"
                ),
            })
        }
        CredentialsSecretAction::AddRouteCredentials => {
            let resource_version = existing
                .as_ref()
                .and_then(|s| s.metadata.resource_version.clone())
                .unwrap_or_default();
            let data = route_data(&generate_password())
                .map_err(|e| Failure::broker_refused(e.message().to_string(), e))?;
            kube_api::add_secret_data(client, ns, &name, &resource_version, data).await?;
            info!(secret = %name, "added the route credentials to the broker's Secret");
            Ok(SecretWrite::RouteKeysAdded)
        }
        CredentialsSecretAction::Unusable { reason } => Err(Failure::Missing {
            reason: "CredentialsUnusable",
            message: format!("the broker's servers cannot start with this Secret: {reason}"),
        }),
        CredentialsSecretAction::Create if !cluster.generates_credentials() => {
            Err(Failure::Missing {
                reason: "SecretNotFound",
                message: format!(
                    "spec.auth.existingSecret: Secret {name} does not exist in namespace {ns}; create it with keys user, password, operator-user, operator-password, route-user and route-password"
                ),
            })
        }
        CredentialsSecretAction::Create => {
            let secret = credentials_secret(
                cluster,
                &generate_password(),
                &generate_password(),
                &generate_password(),
            )
            .map_err(|e| Failure::broker_refused(e.message().to_string(), e))?;
            let created = kube_api::create_if_absent(client, &secret).await?;
            if created {
                info!(secret = %name, "created the broker's credentials Secret");
                Ok(SecretWrite::Created)
            } else {
                Ok(SecretWrite::None)
            }
        }
    }
}

/// The highest replica count of any stream on the broker (0 without streams).
async fn max_stream_replicas(
    ctx: &ReconcileContext,
    namespace: &str,
    broker: &Broker,
) -> Result<u32, Failure> {
    let connection = ctx.pool.get(&ctx.lookup, namespace, broker).await.map_err(|e| {
        Failure::unavailable(
            format!(
                "a scale-down needs the replica counts of the broker's streams, but {e}; it waits until the broker answers"
            ),
            Some(Box::new(e)),
        )
    })?;
    let name = broker.name_any();
    let infos: Vec<_> = tokio::time::timeout(
        super::context::CONNECT_TIMEOUT,
        connection.jetstream().streams().try_collect(),
    )
    .await
    .map_err(|e| {
        Failure::unavailable(
            format!("timed out listing the streams of Broker {namespace}/{name}"),
            Some(Box::new(e)),
        )
    })?
    .map_err(|e| {
        Failure::unavailable(
            format!("failed to list the streams of Broker {namespace}/{name}: {e}"),
            Some(Box::new(e)),
        )
    })?;
    Ok(infos
        .iter()
        .map(|i| u32::try_from(i.config.num_replicas).unwrap_or(u32::MAX))
        .max()
        .unwrap_or(0))
}

/// Asks the ready servers' `/jsz`, in ordinal order, until one answers.
async fn read_meta_group(cluster: &BrokerCluster, ready: i32) -> MetaGroup {
    let port = u16::try_from(MONITOR_PORT).unwrap_or(8222);
    for ordinal in 0..cluster.replicas() {
        let host = cluster.pod_dns_name(ordinal);
        let server = format!("{}-{ordinal}", cluster.name());
        match meta_group(&host, port, &server, MONITOR_TIMEOUT).await {
            Ok(meta) => return meta,
            Err(e) => tracing::debug!(%server, error = %e, ready, "no meta group from server"),
        }
    }
    warn!("no server answered /jsz; meta leader unknown");
    MetaGroup::default()
}
