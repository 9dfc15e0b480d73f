//! The Broker's users Secret `<broker>-users`: rendered from the identity Secrets of the
//! ConsumerGroups on the Broker (`<group>-broker-identity`) and of the producers its Topics
//! and Queues name (`<producer>-producer-identity`, made here), each read **by name** (the
//! operator never lists Secrets), plus the operator's own and the legacy shared user; applied
//! before the servers (their pods mount it), and pushed to running servers with a reload
//! through the system account.
//!
//! The kubelet refreshes a mounted Secret within about a minute, not at once, so after a
//! change the reconcile asks the servers to reload every [`RELOAD_RETRY`] for
//! [`RELOAD_WINDOW`] (reloading an unchanged file is harmless).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use sluice_broker::ResourceRef;
use sluice_broker::identity::producer_permissions;
use sluice_broker::names;
use tracing::{info, warn};

use super::context::{CONNECT_TIMEOUT, ReconcileContext};
use super::{Failure, kube_api};
use crate::broker_cluster::users::{
    ClientUser, SYSTEM_USERNAME, USERS_FILE, base_users_from_env, hash_password, users_conf,
    users_secret,
};
use crate::broker_cluster::{BrokerCluster, OPERATOR_PASSWORD_KEY, generate_password};
use crate::crd::{Broker, ConsumerGroup, Queue, Topic};
use crate::desired::identity::{
    BROKER_IDENTITY_LABEL, CA_KEY, IdentityInputs, NAMESPACE_KEY, PERMISSIONS_ANNOTATION, URL_KEY,
    client_user, group_identity_secret_name, identity_secret, permissions_json,
    producer_identity_secret_name,
};

/// How often the servers are asked to reload while a users change is recent.
pub const RELOAD_RETRY: Duration = Duration::from_secs(20);
/// How long after a users change the servers keep being asked to reload.
pub const RELOAD_WINDOW: Duration = Duration::from_secs(180);
/// Annotation of the users Secret: when its content last changed (Unix seconds).
pub const USERS_CHANGED_AT_ANNOTATION: &str = "sluice.dev/users-changed-at";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Renders and applies the users Secret (making or updating the producers' identity
/// Secrets on the way). Returns whether the content changed within [`RELOAD_WINDOW`] on an
/// existing Secret (the servers must be asked to reload).
pub async fn apply_users(
    client: &Client,
    ctx: &ReconcileContext,
    broker: &Broker,
    cluster: &BrokerCluster,
) -> Result<bool, Failure> {
    let ns = cluster.namespace();
    let mut clients = group_users(client, cluster).await?;
    clients.extend(producer_users(client, ctx, broker, cluster).await?);
    clients.sort_by(|a, b| a.user.cmp(&b.user));
    clients.dedup_by(|a, b| a.user == b.user);
    let text = users_conf(&base_users_from_env(), &clients)
        .map_err(|e| Failure::broker("failed to render the broker's users file", e))?;
    let existing: Option<Secret> =
        kube_api::get_opt(client, ns, &cluster.users_secret_name()).await?;
    let old_text = existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(USERS_FILE))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned());
    let old_changed_at = existing
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(USERS_CHANGED_AT_ANNOTATION))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let now = now_secs();
    let changed_at = if old_text.as_deref() == Some(text.as_str()) {
        old_changed_at
    } else {
        if existing.is_some() {
            info!(users = clients.len(), "broker users changed");
        }
        now
    };
    let mut secret = users_secret(cluster, &text);
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            USERS_CHANGED_AT_ANNOTATION.to_string(),
            changed_at.to_string(),
        );
    kube_api::apply(client, &secret).await?;
    Ok(existing.is_some() && now.saturating_sub(changed_at) < RELOAD_WINDOW.as_secs())
}

/// The users of the ConsumerGroups on the Broker: each group's identity Secret, read by name.
/// A group whose Secret does not exist yet (its reconcile makes it) is skipped.
async fn group_users(client: &Client, cluster: &BrokerCluster) -> Result<Vec<ClientUser>, Failure> {
    let ns = cluster.namespace();
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), ns);
    let listed = kube_api::bounded(
        || format!("list the ConsumerGroups in {ns}"),
        groups.list(&ListParams::default()),
    )
    .await?;
    let mut users = Vec::new();
    for group in &listed.items {
        let on_broker = group
            .status
            .as_ref()
            .and_then(|s| s.broker.as_deref())
            .or(group.spec.broker.as_deref());
        if on_broker != Some(cluster.name()) {
            continue;
        }
        let name = group_identity_secret_name(&group.name_any());
        let Some(secret) = kube_api::get_opt::<Secret>(client, ns, &name).await? else {
            continue;
        };
        if let Some(user) = checked_user(&secret, cluster.name()) {
            users.push(user);
        }
    }
    Ok(users)
}

/// An identity Secret's user, when the Secret is labelled for `broker` and well formed.
fn checked_user(secret: &Secret, broker: &str) -> Option<ClientUser> {
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(BROKER_IDENTITY_LABEL))
        .map(String::as_str);
    if labelled != Some(broker) {
        warn!(
            secret = %secret.name_any(),
            "identity Secret skipped: it is not labelled {BROKER_IDENTITY_LABEL}={broker}; delete it to have it made again"
        );
        return None;
    }
    match client_user(secret) {
        Ok(user) => Some(user),
        Err(reason) => {
            warn!(%reason, "identity Secret skipped");
            None
        }
    }
}

/// What each producer named by the Broker's Topics and Queues may publish to: topic name ->
/// partitions, and queue names.
type ProducerGrants = BTreeMap<String, (BTreeMap<String, u32>, Vec<String>)>;

/// The producers named in the `producers` lists of the Broker's Topics and Queues.
pub fn producer_grants<'a>(
    topics: impl IntoIterator<Item = &'a Topic>,
    queues: impl IntoIterator<Item = &'a Queue>,
    broker: &str,
) -> ProducerGrants {
    let mut grants = ProducerGrants::new();
    for topic in topics.into_iter().filter(|t| t.spec.broker == broker) {
        for producer in &topic.spec.producers {
            grants
                .entry(producer.clone())
                .or_default()
                .0
                .insert(topic.name_any(), topic.spec.partitions);
        }
    }
    for queue in queues.into_iter().filter(|q| q.spec.broker == broker) {
        for producer in &queue.spec.producers {
            grants
                .entry(producer.clone())
                .or_default()
                .1
                .push(queue.name_any());
        }
    }
    grants
}

/// Makes (first time) or updates (permissions, URL, CA) the identity Secret of every producer
/// the Broker's Topics and Queues name, owned by the Broker, and returns their users.
async fn producer_users(
    client: &Client,
    ctx: &ReconcileContext,
    broker: &Broker,
    cluster: &BrokerCluster,
) -> Result<Vec<ClientUser>, Failure> {
    let ns = cluster.namespace();
    let topics: Api<Topic> = Api::namespaced(client.clone(), ns);
    let queues: Api<Queue> = Api::namespaced(client.clone(), ns);
    let topics = kube_api::bounded(
        || format!("list the Topics in {ns}"),
        topics.list(&ListParams::default()),
    )
    .await?;
    let queues = kube_api::bounded(
        || format!("list the Queues in {ns}"),
        queues.list(&ListParams::default()),
    )
    .await?;
    let grants = producer_grants(&topics.items, &queues.items, cluster.name());
    if grants.is_empty() {
        return Ok(Vec::new());
    }
    let ca = if ctx.pool.uses_tls(broker) {
        ctx.lookup
            .broker_ca(ns, cluster.name())
            .await?
            .map(|pem| String::from_utf8_lossy(&pem).into_owned())
    } else {
        None
    };
    let url = cluster.client_url();
    let mut users = Vec::new();
    for (producer, (topics, queues)) in grants {
        let identity = match ResourceRef::new(ns, producer.clone()) {
            Ok(r) => r,
            Err(e) => {
                warn!(%producer, error = %e, "producer skipped: not a resource name");
                continue;
            }
        };
        let permissions = match producer_permissions(&identity, &topics, &queues) {
            Ok(p) => p,
            Err(e) => {
                warn!(%producer, error = %e, "producer skipped");
                continue;
            }
        };
        let name = producer_identity_secret_name(&producer);
        let wanted_permissions = permissions_json(&permissions);
        let existing: Option<Secret> = kube_api::get_opt(client, ns, &name).await?;
        let secret = match existing {
            Some(secret) => {
                let managed = secret.owner_references().iter().any(|o| {
                    o.controller == Some(true) && Some(&o.uid) == broker.meta().uid.as_ref()
                });
                if !managed {
                    warn!(secret = %name, %producer, "producer skipped: a Secret of that name exists and was not made by the operator for this Broker; delete or rename it");
                    continue;
                }
                update_producer_secret(client, &secret, &wanted_permissions, &url, ca.as_deref())
                    .await?
            }
            None => {
                let password = generate_password();
                let password_hash = hash_password(&password)
                    .map_err(|e| Failure::broker("failed to hash a producer's password", e))?;
                let inputs = IdentityInputs {
                    namespace: ns,
                    name: name.clone(),
                    broker: cluster.name(),
                    owner: broker.controller_owner_ref(&()),
                    user: names::producer_user(&identity),
                    password: &password,
                    password_hash,
                    permissions: &permissions,
                    url: Some(&url),
                    ca: ca.as_deref(),
                };
                let secret = identity_secret(&inputs);
                kube_api::create_if_absent(client, &secret).await?;
                info!(secret = %name, %producer, "created a producer's broker identity");
                secret
            }
        };
        if let Some(user) = checked_user(&secret, cluster.name()) {
            users.push(user);
        }
    }
    Ok(users)
}

/// Brings an existing producer Secret's permissions, URL and CA up to date (merge patch;
/// the password stays). Returns the Secret as it is now.
async fn update_producer_secret(
    client: &Client,
    secret: &Secret,
    permissions: &str,
    url: &str,
    ca: Option<&str>,
) -> Result<Secret, Failure> {
    let ns = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let current = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PERMISSIONS_ANNOTATION))
        .map(String::as_str);
    let mut data = serde_json::Map::new();
    if value(URL_KEY).as_deref() != Some(url) {
        data.insert(URL_KEY.into(), b64(url));
    }
    if value(NAMESPACE_KEY).as_deref() != Some(ns.as_str()) {
        data.insert(NAMESPACE_KEY.into(), b64(&ns));
    }
    match ca {
        Some(ca) if value(CA_KEY).as_deref() != Some(ca) => {
            data.insert(CA_KEY.into(), b64(ca));
        }
        None if value(CA_KEY).is_some() => {
            data.insert(CA_KEY.into(), serde_json::Value::Null);
        }
        _ => {}
    }
    if current == Some(permissions) && data.is_empty() {
        return Ok(secret.clone());
    }
    let patch = serde_json::json!({
        "metadata": { "annotations": { PERMISSIONS_ANNOTATION: permissions } },
        "data": data,
    });
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let patched = kube_api::bounded(
        || format!("update the producer identity Secret {ns}/{name}"),
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await?;
    info!(secret = %name, "producer's broker permissions, URL or CA updated");
    Ok(patched)
}

/// `value` as a Secret's data value (base64, as the API expects it in a patch).
fn b64(value: &str) -> serde_json::Value {
    serde_json::to_value(k8s_openapi::ByteString(value.as_bytes().to_vec()))
        .unwrap_or(serde_json::Value::Null)
}

/// Asks every server to reload its configuration, as the system user (whose password is the
/// operator's). Failures only warn: the next reconcile asks again.
pub async fn reload(
    client: &Client,
    ctx: &ReconcileContext,
    broker: &Broker,
    cluster: &BrokerCluster,
) {
    let ns = cluster.namespace();
    let secret: Option<Secret> =
        match kube_api::get_opt(client, ns, &cluster.credentials_secret_name()).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the credentials to reload the servers");
                return;
            }
        };
    let Some(password) = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(OPERATOR_PASSWORD_KEY).cloned())
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    else {
        warn!("the credentials Secret has no operator password: cannot reload the servers");
        return;
    };
    let url = ctx.pool.url(ns, cluster.name());
    let mut options = sluice_broker::ConnectOptions::from_url_list(&url);
    options.name = "sluice-operator reload".into();
    options.connect_timeout = CONNECT_TIMEOUT;
    if ctx.pool.uses_tls(broker) {
        let ca = match ctx.lookup.broker_ca(ns, cluster.name()).await {
            Ok(Some(pem)) => sluice_broker::tls::TrustedCa::from_pem(&pem),
            Ok(None) => {
                warn!("the Broker's CA is not there yet: cannot reload the servers");
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot read the Broker's CA to reload the servers");
                return;
            }
        };
        match ca {
            Ok(ca) => options.ca = Some(ca),
            Err(e) => {
                warn!(error = %e, "the Broker's CA does not parse: cannot reload the servers");
                return;
            }
        }
    }
    let nats_options = match options.to_nats_options() {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "cannot set up TLS to reload the servers");
            return;
        }
    };
    let connect = nats_options
        .user_and_password(SYSTEM_USERNAME.into(), password)
        .max_reconnects(Some(0))
        .connect(options.urls.clone());
    let system = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot log in as {SYSTEM_USERNAME} to reload the servers");
            return;
        }
        Err(_) => {
            warn!("timed out logging in as {SYSTEM_USERNAME} to reload the servers");
            return;
        }
    };
    let expected = usize::from(cluster.replicas());
    match sluice_broker::identity::reload_servers(&system, expected, Duration::from_secs(2)).await {
        Ok(ids) => info!(
            servers = ids.len(),
            "asked the servers to reload their users"
        ),
        Err(e) => warn!(error = %e, "servers not reloaded (retried)"),
    }
}
