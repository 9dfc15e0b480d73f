//! Kubernetes API writes of the controllers, each bounded by [`API_TIMEOUT`] and made with
//! the field manager [`MANAGER`]: server-side apply of owned objects, create-if-absent,
//! guarded additions of Secret keys, and reads that may find nothing.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::{ByteString, NamespaceResourceScope};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Failure, MANAGER};

/// Longest any single Kubernetes API call of a reconcile may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// A kind the controllers read and write.
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
}
impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Runs one API call, failing with [`Failure::Timeout`] after [`API_TIMEOUT`] and with
/// [`Failure::Kube`] (context: `what`) when the call fails.
pub async fn bounded<T>(
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::kube(what(), e)),
        Err(_) => Err(Failure::Timeout(format!(
            "{} timed out after {API_TIMEOUT:?}; the API server is slow or unreachable",
            what()
        ))),
    }
}

fn describe<K: Object>(verb: &str, namespace: &str, name: &str) -> String {
    format!("failed to {verb} {} {namespace}/{name}", K::kind(&()))
}

/// Server-side applies `obj` (which names its namespace and name) with field manager
/// [`MANAGER`], forcing ownership of the fields it sets: the operator is the only intended
/// writer of the objects it builds. Returns the object as stored.
pub async fn apply<K: Object>(client: &Client, obj: &K) -> Result<K, Failure> {
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    bounded(
        || describe::<K>("apply", &namespace, &name),
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        ),
    )
    .await
}

/// Reads an object; `None` when it does not exist.
pub async fn get_opt<K: Object>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, Failure> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    bounded(|| describe::<K>("read", namespace, name), api.get_opt(name)).await
}

/// Creates `obj` unless an object of that name exists. Returns whether it was created; an
/// existing object is never touched (409 AlreadyExists counts as "exists").
pub async fn create_if_absent<K: Object>(client: &Client, obj: &K) -> Result<bool, Failure> {
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match tokio::time::timeout(API_TIMEOUT, api.create(&params, obj)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => Ok(false),
        Ok(Err(e)) => Err(Failure::kube(describe::<K>("create", &namespace, &name), e)),
        Err(_) => Err(Failure::Timeout(format!(
            "{} timed out after {API_TIMEOUT:?}",
            describe::<K>("create", &namespace, &name)
        ))),
    }
}

/// Adds `data` keys to Secret `namespace/name` with a JSON merge patch: keys not named in
/// `data` keep their values. The patch carries `resource_version` (the version the caller
/// read and decided on), so the API server refuses it (409, reported as a failure and
/// retried from a fresh read) when the Secret changed in between.
pub async fn add_secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
    resource_version: &str,
    data: BTreeMap<String, ByteString>,
) -> Result<(), Failure> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "data": data,
    });
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    bounded(
        || describe::<Secret>("add keys to", namespace, name),
        api.patch(name, &params, &Patch::Merge(&patch)),
    )
    .await
    .map(drop)
}
