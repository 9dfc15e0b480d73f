//! A ConsumerGroup's broker identity on a cluster: the Secret `<group>-broker-identity` (owned
//! by the group, labelled for its Broker) is created once with a fresh password and its bcrypt
//! hash, its permissions annotation follows the group's config and outputs, and the worker
//! Deployment takes its credentials from it. The Broker controller reads these Secrets by
//! name (for each ConsumerGroup on it) to render its users file and reloads the servers. Deleting the Secret rotates the password: it
//! is created again with a new one and the workers roll (the pod template carries a hash).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use sluice_broker::identity::group_permissions;
use sluice_broker::names;
use tracing::info;

use super::group::GroupOutcome;
use super::{Failure, kube_api, ns_name};
use crate::broker_cluster::generate_password;
use crate::broker_cluster::users::hash_password;
use crate::crd::{ConsumerGroup, Topic};
use crate::desired::identity::{
    HASH_KEY, IdentityInputs, PERMISSIONS_ANNOTATION, group_identity_secret_name, identity_secret,
    permissions_json, use_identity,
};

/// Ensures the group's identity Secret and points its worker Deployment at it. Does nothing
/// for a group that was not provisioned in this reconcile.
pub async fn ensure(
    client: &Client,
    group: &ConsumerGroup,
    result: &mut GroupOutcome,
) -> Result<(), Failure> {
    let Some((config, broker)) = &result.identity else {
        return Ok(());
    };
    let (ns, name) = ns_name(group);
    let mut topics = BTreeMap::new();
    for topic in &config.outputs.topics {
        let found: Option<Topic> = kube_api::get_opt(client, &ns, topic).await?;
        topics.insert(topic.clone(), found.map_or(0, |t| t.spec.partitions));
    }
    let permissions = group_permissions(config, &topics)
        .map_err(|e| Failure::broker("failed to derive the group's broker permissions", e))?;
    let secret_name = group_identity_secret_name(&name);
    let existing: Option<Secret> = kube_api::get_opt(client, &ns, &secret_name).await?;
    let wanted = permissions_json(&permissions);
    let hash = match existing {
        Some(secret) => {
            let current = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PERMISSIONS_ANNOTATION));
            if current != Some(&wanted) {
                let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                let patch = serde_json::json!({
                    "metadata": { "annotations": { PERMISSIONS_ANNOTATION: wanted } }
                });
                kube_api::bounded(
                    || format!("update the permissions of Secret {ns}/{secret_name}"),
                    api.patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?;
                info!(secret = %secret_name, "group's broker permissions updated");
            }
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(HASH_KEY))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .unwrap_or_default()
        }
        None => {
            let password = generate_password();
            let password_hash = hash_password(&password)
                .map_err(|e| Failure::broker("failed to hash the group's password", e))?;
            let inputs = IdentityInputs {
                namespace: &ns,
                name: secret_name.clone(),
                broker,
                owner: group.controller_owner_ref(&()),
                user: names::group_user(
                    &config
                        .group_ref()
                        .map_err(|e| Failure::broker("invalid group name", e))?,
                ),
                password: &password,
                password_hash: password_hash.clone(),
                permissions: &permissions,
                url: None,
                ca: None,
            };
            kube_api::create_if_absent(client, &identity_secret(&inputs)).await?;
            info!(secret = %secret_name, "created the group's broker identity");
            password_hash
        }
    };
    if let Some(deployment) = result.deployment.as_mut() {
        use_identity(deployment, &secret_name, &hash);
    }
    Ok(())
}
