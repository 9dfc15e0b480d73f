//! Support for the real-cluster tests (`k8s_*.rs`): they run only when `KUBECONFIG` is set,
//! each in a fresh namespace that a guard deletes on drop (also when the test fails), and
//! print the namespace's Sluice objects when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};

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

/// Polls `check` every 250ms until it holds, failing after `timeout`.
pub async fn poll<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fresh namespace, deleted (with everything in it) when dropped; cluster-scoped objects
/// registered with [`TempNamespace::also_delete`] go with it.
pub struct TempNamespace {
    /// The namespace's name.
    pub name: String,
    cluster_scoped: Vec<(kube::discovery::ApiResource, String)>,
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
    pub fn also_delete(&mut self, resource: kube::discovery::ApiResource, name: String) {
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
                    let api: Api<kube::api::DynamicObject> =
                        Api::all_with(client.clone(), &resource);
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

/// Prints the Sluice objects and their status, to diagnose a failed test.
async fn dump(client: &Client, namespace: &str) {
    use sluice_operator::crd::{Broker, ConsumerGroup, Topic};
    eprintln!("--- state of namespace {namespace} at failure ---");
    if let Ok(l) = Api::<Broker>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
    {
        for b in l {
            eprintln!("Broker {:?}: {:?}", b.metadata.name, b.status);
        }
    }
    if let Ok(l) = Api::<Topic>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
    {
        for t in l {
            eprintln!("Topic {:?}: {:?}", t.metadata.name, t.status);
        }
    }
    if let Ok(l) = Api::<ConsumerGroup>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
    {
        for g in l {
            eprintln!("ConsumerGroup {:?}: {:?}", g.metadata.name, g.status);
        }
    }
}

/// Applies the CRDs generated from the Rust types (server-side apply) and waits until each
/// is established.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sluice_operator::crdgen::all_crds() {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("sluice-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    for crd in sluice_operator::crdgen::all_crds() {
        let name = crd.name_any();
        poll(
            &format!("CRD {name} established"),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    api.get(&name)
                        .await
                        .ok()
                        .and_then(|c| c.status)
                        .and_then(|s| s.conditions)
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        })
                }
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

/// The controllers running in-process, watching one namespace, with Broker `main` reached at
/// a local nats-server's URL; [`InProcessOperator::stop`] shuts them down.
pub struct InProcessOperator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessOperator {
    /// Starts the controllers for `namespace` with the given resync period and metrics.
    pub fn start(
        client: &Client,
        namespace: &str,
        broker_url: &str,
        resync: Duration,
        metrics: std::sync::Arc<sluice_operator::controller::metrics::Metrics>,
    ) -> Self {
        use sluice_operator::controller::runtime::{self, Settings};
        let settings = Settings {
            namespaces: vec![namespace.to_string()],
            broker_urls: std::collections::BTreeMap::from([(
                "main".to_string(),
                broker_url.to_string(),
            )]),
            resync,
            ..Settings::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runtime::run(
            client.clone(),
            settings,
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, task }
    }

    /// Stops the controllers and waits until they ended.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}
