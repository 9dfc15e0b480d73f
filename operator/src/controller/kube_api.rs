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
use serde_json::Value;

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

/// Annotation holding a hash of the object as the operator last built it, so an apply that
/// would change nothing can be told from one that would (see [`apply`]).
pub const APPLIED_HASH: &str = "sluice.dev/applied-hash";

/// Server-side applies `obj` (which names its namespace and name) with field manager
/// [`MANAGER`], forcing ownership of the fields it sets: the operator is the only intended
/// writer of the objects it builds. Returns the object as stored.
///
/// Writes only when something would change: the object is stamped with [`APPLIED_HASH`]
/// (a hash of what was built) and read first; when every field the operator sets, the
/// stamp included, already holds the built value, the stored object is returned and nothing
/// is sent. A field someone else changed, or a change in what the operator builds (which
/// changes the stamp, also when a field is dropped), makes it apply.
pub async fn apply<K: Object>(client: &Client, obj: &K) -> Result<K, Failure> {
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let desired = stamped(obj).map_err(|e| {
        Failure::InvalidSpec(crate::crd::InvalidField::new(
            "",
            format!("{}: {e}", describe::<K>("serialize", &namespace, &name)),
        ))
    })?;
    let stored: Option<K> = bounded(
        || describe::<K>("read", &namespace, &name),
        api.get_opt(&name),
    )
    .await?;
    if let Some(stored) = &stored {
        refuse_foreign(stored, obj)?;
    }
    if let Some(stored) = stored
        && serde_json::to_value(&stored).is_ok_and(|have| holds(&have, &desired))
    {
        return Ok(stored);
    }
    bounded(
        || describe::<K>("apply", &namespace, &name),
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        ),
    )
    .await
}

/// Fails with [`Failure::NameConflict`] when `desired` names a controller (its owner) and
/// `stored`, the object of the same name already there, is not controlled by that same
/// owner: a forced apply would otherwise take over (and rewrite) a user's object.
pub fn refuse_foreign<K: Object>(stored: &K, desired: &K) -> Result<(), Failure> {
    let controller_of = |meta: &kube::core::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .cloned()
    };
    let Some(owner) = controller_of(desired.meta()) else {
        return Ok(());
    };
    let stored_owner = controller_of(stored.meta());
    if stored_owner.as_ref().is_some_and(|o| o.uid == owner.uid) {
        return Ok(());
    }
    let namespace = desired.meta().namespace.clone().unwrap_or_default();
    let name = desired.meta().name.clone().unwrap_or_default();
    let held_by = match stored_owner {
        Some(o) => format!("it is controlled by {} {}", o.kind, o.name),
        None => "it was not created by the operator".to_string(),
    };
    Err(Failure::NameConflict(format!(
        "{} {namespace}/{name} already exists and {held_by}, so {} {} cannot use that name; delete or rename the existing {} (the operator never takes over objects it did not create)",
        K::kind(&()),
        owner.kind,
        owner.name,
        K::kind(&()),
    )))
}

/// Deletes `namespace/name` when it exists and is controlled by the owner with `owner_uid`
/// (an object of the same name that belongs to someone else is left alone). The delete is
/// guarded by the object's uid. Returns whether it deleted something.
pub async fn delete_controlled<K: Object>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool, Failure> {
    let Some(stored) = get_opt::<K>(client, namespace, name).await? else {
        return Ok(false);
    };
    let controlled = stored
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if !controlled {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: stored.meta().uid.clone(),
            resource_version: None,
        }),
        ..kube::api::DeleteParams::background()
    };
    match tokio::time::timeout(API_TIMEOUT, api.delete(name, &params)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(kube::Error::Api(e))) if e.code == 404 => Ok(false),
        Ok(Err(e)) => Err(Failure::kube(describe::<K>("delete", namespace, name), e)),
        Err(_) => Err(Failure::Timeout(format!(
            "{} timed out after {API_TIMEOUT:?}; the API server is slow or unreachable",
            describe::<K>("delete", namespace, name)
        ))),
    }
}

/// `obj` as JSON with the [`APPLIED_HASH`] annotation of its content.
pub fn stamped<K: Serialize>(obj: &K) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(obj)?;
    let hash = format!("{:016x}", fnv1a(value.to_string().as_bytes()));
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED_HASH.into(), Value::String(hash));
        }
    }
    Ok(value)
}

/// Whether `have` (a stored object) holds every value of `want` (what would be applied):
/// objects may have more keys, lists must have the same length and hold item by item.
pub fn holds(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (_, Value::Null) => true,
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| wv.is_null() || h.get(k).is_some_and(|hv| holds(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| holds(hv, wv))
        }
        (h, w) => h == w,
    }
}

/// A hex hash of `bytes`, stable across builds and platforms (for annotations).
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

/// 64-bit FNV-1a: stable across builds and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_object_with_defaults_holds_what_was_applied() {
        let want = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
                          "spec": {"replicas": 2, "ports": [{"port": 4222}]}});
        let have = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}},
                          "spec": {"replicas": 2, "ports": [{"port": 4222, "protocol": "TCP"}]},
                          "status": {"readyReplicas": 2}});
        assert!(holds(&have, &want));
        let edited = json!({"metadata": {"name": "a", "labels": {"x": "2"}},
                            "spec": {"replicas": 2, "ports": [{"port": 4222}]}});
        assert!(!holds(&edited, &want), "a changed value is re-applied");
        let shorter = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
                             "spec": {"replicas": 2, "ports": []}});
        assert!(!holds(&shorter, &want), "a removed list item is re-applied");
    }

    #[test]
    fn the_stamp_changes_with_the_content_only() {
        let a = stamped(&json!({"metadata": {"name": "a"}, "data": {"k": "v"}})).unwrap();
        let again = stamped(&json!({"metadata": {"name": "a"}, "data": {"k": "v"}})).unwrap();
        let b = stamped(&json!({"metadata": {"name": "a"}, "data": {}})).unwrap();
        let hash = |v: &Value| v["metadata"]["annotations"][APPLIED_HASH].clone();
        assert_eq!(hash(&a), hash(&again));
        assert_ne!(hash(&a), hash(&b), "dropping a field changes the stamp");
        assert!(!holds(&a, &b), "so the smaller object is applied");
    }
}
