//! The Broker's users Secret `<broker>-users`: rendered from the identity Secrets labelled
//! `sluice.dev/broker-identity: <broker>` (the only Secrets the operator lists, by label) plus
//! the operator's own and the legacy shared user, applied before the servers (their pods mount
//! it), and pushed to running servers with a reload through the system account.
//!
//! The kubelet refreshes a mounted Secret within about a minute, not at once, so after a
//! change the reconcile asks the servers to reload every [`RELOAD_RETRY`] for
//! [`RELOAD_WINDOW`] (reloading an unchanged file is harmless).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};
use tracing::{info, warn};

use super::context::{CONNECT_TIMEOUT, ReconcileContext};
use super::{Failure, kube_api};
use crate::broker_cluster::users::{
    SYSTEM_USERNAME, USERS_FILE, base_users_from_env, users_conf, users_secret,
};
use crate::broker_cluster::{BrokerCluster, OPERATOR_PASSWORD_KEY};
use crate::desired::identity::{BROKER_IDENTITY_LABEL, client_user};

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

/// Renders and applies the users Secret. Returns whether the content changed within
/// [`RELOAD_WINDOW`] on an existing Secret (the servers must be asked to reload).
pub async fn apply_users(client: &Client, cluster: &BrokerCluster) -> Result<bool, Failure> {
    let ns = cluster.namespace();
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let selector = format!("{BROKER_IDENTITY_LABEL}={}", cluster.name());
    let listed = kube_api::bounded(
        || format!("list identity Secrets ({selector}) in {ns}"),
        api.list(&ListParams::default().labels(&selector)),
    )
    .await?;
    let mut clients = Vec::new();
    for secret in &listed.items {
        match client_user(secret) {
            Ok(user) => clients.push(user),
            Err(reason) => warn!(%reason, "identity Secret skipped"),
        }
    }
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

/// Asks every server to reload its configuration, as the system user (whose password is the
/// operator's). Failures only warn: the next reconcile asks again.
pub async fn reload(client: &Client, ctx: &ReconcileContext, cluster: &BrokerCluster) {
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
    let connect = options
        .to_nats_options()
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
