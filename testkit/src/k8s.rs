//! Support for the real-cluster tests (`k8s_*.rs`): they run only when `KUBECONFIG` is set,
//! each in a fresh namespace that a guard deletes on drop (also when the test fails), and
//! print the namespace's Sluice objects when a test fails.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};

use crate::wait::wait_until;

/// A client for the cluster in `KUBECONFIG`, or `None` (with the reason printed) without one.
pub async fn client_or_skip(test: &str) -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "skipping {test}: KUBECONFIG is not set (this test needs a real Kubernetes 1.28+ cluster)"
        );
        return None;
    }
    Some(
        Client::try_default()
            .await
            .expect("KUBECONFIG is set but the cluster is unreachable"),
    )
}

/// A fresh namespace, deleted (with everything in it) when dropped; cluster-scoped objects
/// registered with [`TempNamespace::also_delete`] go with it.
#[derive(Debug)]
pub struct TempNamespace {
    /// The namespace's name.
    pub name: String,
    cluster_scoped: Vec<(ApiResource, String)>,
}

impl TempNamespace {
    /// Creates `sluice-<prefix>-<pid>-<n>`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("sluice-{prefix}-{}-{}", std::process::id(), rand_suffix());
        let api: Api<Namespace> = Api::all(client.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"sluice.dev/test": "true"}}})).unwrap(),
        )
        .await
        .unwrap();
        Self {
            name,
            cluster_scoped: Vec::new(),
        }
    }

    /// Deletes this cluster-scoped object together with the namespace.
    pub fn also_delete(&mut self, resource: ApiResource, name: String) {
        self.cluster_scoped.push((resource, name));
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100_000)
        .unwrap_or(0)
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        let cluster_scoped = std::mem::take(&mut self.cluster_scoped);
        let failed = std::thread::panicking();
        // The test's runtime may be shutting down: use a fresh one on a plain thread, with
        // a client of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(client) = Client::try_default().await else {
                    eprintln!("cannot clean up namespace {name}: no client");
                    return;
                };
                if failed {
                    dump(&client, &name).await;
                }
                for (resource, object) in cluster_scoped {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                    let _ = api.delete(&object, &DeleteParams::default()).await;
                }
                let api: Api<Namespace> = Api::all(client);
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => eprintln!("deleted test namespace {name}"),
                    Err(e) => {
                        eprintln!("failed to delete test namespace {name}: {e}; delete it by hand")
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The Sluice kinds whose objects a failed test prints.
const SLUICE_KINDS: [&str; 5] = [
    "Broker",
    "Topic",
    "Queue",
    "ConsumerGroup",
    "DeadLetterQueue",
];

/// Prints the Sluice objects and their status, to diagnose a failed test.
async fn dump(client: &Client, namespace: &str) {
    eprintln!("--- state of namespace {namespace} at failure ---");
    for kind in SLUICE_KINDS {
        let gvk = GroupVersionKind::gvk("sluice.dev", "v1alpha1", kind);
        let resource = ApiResource::from_gvk(&gvk);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        if let Ok(list) = api.list(&Default::default()).await {
            for o in list {
                eprintln!("{kind} {:?}: {}", o.metadata.name, o.data["status"]);
            }
        }
    }
}

/// Applies `crds` (server-side apply, field manager `sluice-test`) and waits until each
/// is established.
pub async fn install_crds(client: &Client, crds: &[CustomResourceDefinition]) {
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("sluice-test").force(),
            &Patch::Apply(crd),
        )
        .await
        .unwrap();
    }
    for crd in crds {
        let name = crd.name_any();
        wait_until(
            Duration::from_secs(120),
            &format!("CRD {name} established"),
            async || {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            },
        )
        .await;
    }
}

/// `Err` with the reason when the cluster cannot run pods (no Ready node, as with a bare
/// kube-apiserver and etcd): a test that needs a running pod skips with it instead of
/// waiting out its deadline.
pub async fn cluster_runs_pods(client: &Client) -> Result<(), String> {
    use k8s_openapi::api::core::v1::Node;
    let nodes = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| format!("cannot list the cluster's nodes ({e})"))?;
    let ready = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    if ready == 0 {
        return Err(format!(
            "the cluster has no Ready node ({} nodes), so pods stay Pending",
            nodes.items.len()
        ));
    }
    Ok(())
}
