//! The cluster path of the operations commands: with neither `--broker-url` nor `--dev`, the
//! broker is found through the kubeconfig (Broker -> a Ready pod of its StatefulSet), reached by
//! a port-forward to its client port and logged into with the credentials of its Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tracing::instrument;

use super::port_forward::{ForwardError, PortForward};
use crate::broker_cluster::{
    CLIENT_PORT, OPERATOR_PASSWORD_KEY, OPERATOR_USER_KEY, PASSWORD_KEY, USER_KEY, selector_labels,
};
use crate::crd::{Broker, InvalidField};

/// Why the broker of a cluster could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig (nor in-cluster config).
    #[error(
        "no broker given: use --broker-url, --dev DIR, or a kubeconfig with access to the cluster"
    )]
    NoKubeconfig(#[source] kube::Error),
    /// The namespace holds no Broker.
    #[error(
        "no Broker in namespace {namespace}: pick another with --namespace, or use --broker-url"
    )]
    NoBrokers {
        /// The namespace searched.
        namespace: String,
    },
    /// Several Brokers and none chosen.
    #[error("namespace {namespace} has several Brokers ({}); choose one with --broker NAME", names.join(", "))]
    AmbiguousBroker {
        /// The namespace searched.
        namespace: String,
        /// The Brokers found.
        names: Vec<String>,
    },
    /// The named Broker does not exist.
    #[error("Broker {name} not found in namespace {namespace} (Brokers there: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    BrokerNotFound {
        /// The Broker asked for.
        name: String,
        /// The namespace searched.
        namespace: String,
        /// The Brokers that exist there.
        available: Vec<String>,
    },
    /// The Broker's spec cannot be turned into its cluster (so its pods are unknown).
    #[error("Broker {namespace}/{name} is invalid: {source}")]
    InvalidBroker {
        /// The Broker.
        name: String,
        /// Its namespace.
        namespace: String,
        /// What is wrong.
        #[source]
        source: InvalidField,
    },
    /// None of the Broker's pods is Ready.
    #[error(
        "no Ready pod of Broker {namespace}/{name} (selector {selector}); check `kubectl get pods -n {namespace} -l {selector}`"
    )]
    NoReadyPod {
        /// The Broker.
        name: String,
        /// Its namespace.
        namespace: String,
        /// The label selector of its pods.
        selector: String,
    },
    /// The credentials Secret does not exist.
    #[error(
        "credentials Secret {namespace}/{name} of the Broker not found; pass --user and --password"
    )]
    SecretMissing {
        /// The Secret.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The credentials Secret lacks a key.
    #[error(
        "credentials Secret {secret} has no key {key:?}; it needs keys user and password (or operator-user and operator-password)"
    )]
    SecretKey {
        /// The Secret.
        secret: String,
        /// The missing key.
        key: String,
    },
    /// The port-forward to the broker pod could not start.
    #[error("failed to port-forward to pod {namespace}/{pod} port {port}: {source}")]
    Forward {
        /// The pod.
        pod: String,
        /// Its namespace.
        namespace: String,
        /// The pod port.
        port: u16,
        /// Why.
        #[source]
        source: ForwardError,
    },
    /// A Kubernetes API call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl ClusterError {
    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

/// A broker reached through a port-forward, and the credentials to log in with.
pub struct ClusterBroker {
    /// The local forward to the broker pod's client port.
    pub forward: PortForward,
    /// User and password from the Broker's credentials Secret.
    pub credentials: (String, String),
    /// The Broker's CA bundle (`ca.crt` of `<broker>-tls`) when it serves TLS.
    pub ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClusterBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBroker")
            .field("forward", &self.forward)
            .field("user", &self.credentials.0)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Annotation the CLI sets on a DeadLetterQueue after replaying from it, so the operator
/// reconciles it at once and its depth in status is current (not up to a resync period old).
pub const REPLAYED_AT_ANNOTATION: &str = "sluice.dev/replayed-at";

/// Marks `namespace/dlq` as replayed just now ([`REPLAYED_AT_ANNOTATION`]). Best effort: a
/// user allowed to read the Broker's Secret but not to patch the DeadLetterQueue is told the
/// status catches up at the next resync.
#[instrument(skip_all, fields(namespace, dlq))]
pub async fn refresh_dlq_status(namespace: &str, dlq: &str) {
    let patched = async {
        let client = Client::try_default().await?;
        let api: Api<crate::crd::DeadLetterQueue> = Api::namespaced(client, namespace);
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"annotations": {REPLAYED_AT_ANNOTATION: now}}});
        api.patch(
            dlq,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map(drop)
    };
    if let Err(e) = patched.await {
        eprintln!(
            "note: could not mark DeadLetterQueue {namespace}/{dlq} as replayed ({e}); its depth in status updates at the operator's next resync"
        );
    }
}

/// Finds the Broker (`requested`, or the only one in `namespace`), forwards a local port to a
/// Ready pod of it and reads its credentials.
#[instrument(skip_all, fields(namespace, broker = requested))]
pub async fn reach(
    namespace: &str,
    requested: Option<&str>,
) -> Result<ClusterBroker, ClusterError> {
    let client = Client::try_default()
        .await
        .map_err(ClusterError::NoKubeconfig)?;
    let brokers: Api<Broker> = Api::namespaced(client.clone(), namespace);
    let list = brokers
        .list(&ListParams::default())
        .await
        .map_err(ClusterError::kube(format!(
            "list Brokers in namespace {namespace}"
        )))?;
    let broker = choose_broker(requested, namespace, list.items)?;
    let name = broker.name_any();
    let cluster =
        crate::desired::broker::cluster(&broker).map_err(|source| ClusterError::InvalidBroker {
            name: name.clone(),
            namespace: namespace.to_string(),
            source,
        })?;
    let selector = label_selector(&selector_labels(&cluster));

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod_list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(ClusterError::kube(format!(
            "list pods of Broker {namespace}/{name}"
        )))?;
    let pod = ready_pod(&pod_list.items).ok_or_else(|| ClusterError::NoReadyPod {
        name: name.clone(),
        namespace: namespace.to_string(),
        selector: selector.clone(),
    })?;

    let secret_name = broker.credentials_secret();
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(ClusterError::kube(format!(
            "read Secret {namespace}/{secret_name}"
        )))?
        .ok_or_else(|| ClusterError::SecretMissing {
            name: secret_name.clone(),
            namespace: namespace.to_string(),
        })?;
    let credentials = credentials(&secret)?;
    let ca = if broker.tls_enabled() {
        let tls_name = crate::broker_cluster::tls_secret_name(&name);
        let tls = secrets
            .get_opt(&tls_name)
            .await
            .map_err(ClusterError::kube(format!(
                "read Secret {namespace}/{tls_name}"
            )))?
            .ok_or_else(|| ClusterError::SecretMissing {
                name: tls_name.clone(),
                namespace: namespace.to_string(),
            })?;
        tls.data
            .and_then(|mut d| d.remove(crate::broker_cluster::CA_CERT_KEY))
            .map(|b| b.0)
    } else {
        None
    };

    let port = u16::try_from(CLIENT_PORT).unwrap_or(4222);
    let forward = PortForward::start(pods, pod.clone(), port)
        .await
        .map_err(|source| ClusterError::Forward {
            pod: pod.clone(),
            namespace: namespace.to_string(),
            port,
            source,
        })?;
    tracing::info!(pod, local = %forward.local_addr(), "forwarding to the broker");
    Ok(ClusterBroker {
        forward,
        credentials,
        ca,
    })
}

/// Picks the Broker named `requested`, or the only Broker when none is named.
pub fn choose_broker(
    requested: Option<&str>,
    namespace: &str,
    brokers: Vec<Broker>,
) -> Result<Broker, ClusterError> {
    let mut names: Vec<String> = brokers.iter().map(ResourceExt::name_any).collect();
    names.sort();
    match requested {
        Some(name) => brokers
            .into_iter()
            .find(|b| b.name_any() == name)
            .ok_or_else(|| ClusterError::BrokerNotFound {
                name: name.to_string(),
                namespace: namespace.to_string(),
                available: names,
            }),
        None => {
            let mut brokers = brokers;
            match brokers.len() {
                0 => Err(ClusterError::NoBrokers {
                    namespace: namespace.to_string(),
                }),
                1 => brokers.pop().ok_or_else(|| ClusterError::NoBrokers {
                    namespace: namespace.to_string(),
                }),
                _ => Err(ClusterError::AmbiguousBroker {
                    namespace: namespace.to_string(),
                    names,
                }),
            }
        }
    }
}

/// The name of a Ready pod (Running, condition `Ready=True`, not being deleted), the first by
/// name so repeated runs pick the same one.
pub fn ready_pod(pods: &[Pod]) -> Option<String> {
    let mut ready: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .map(ResourceExt::name_any)
        .collect();
    ready.sort();
    ready.into_iter().next()
}

/// User and password from a credentials Secret: `operator-user`/`operator-password` when both
/// are present (that user may delete and purge streams), else `user`/`password`.
pub fn credentials(secret: &Secret) -> Result<(String, String), ClusterError> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let field = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| ClusterError::SecretKey {
                secret: secret.name_any(),
                key: key.to_string(),
            })
    };
    if data.contains_key(OPERATOR_USER_KEY) && data.contains_key(OPERATOR_PASSWORD_KEY) {
        return Ok((field(OPERATOR_USER_KEY)?, field(OPERATOR_PASSWORD_KEY)?));
    }
    Ok((field(USER_KEY)?, field(PASSWORD_KEY)?))
}

fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;
    use crate::crd::BrokerSpec;

    fn broker(name: &str) -> Broker {
        let mut b = Broker::new(name, BrokerSpec::with_replicas(3));
        b.metadata.namespace = Some("shop".into());
        b
    }

    fn pod(name: &str, phase: &str, ready: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("main-credentials".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn the_only_broker_is_chosen_when_none_is_named() {
        let b = choose_broker(None, "shop", vec![broker("main")]).unwrap();
        assert_eq!(b.name_any(), "main");
    }

    #[test]
    fn several_brokers_need_a_name_and_the_error_lists_them() {
        let err = choose_broker(None, "shop", vec![broker("b2"), broker("a1")]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClusterError::AmbiguousBroker { .. }));
        assert!(
            text.contains("a1, b2") && text.contains("--broker"),
            "{text}"
        );
        let b = choose_broker(Some("b2"), "shop", vec![broker("b2"), broker("a1")]).unwrap();
        assert_eq!(b.name_any(), "b2");
    }

    #[test]
    fn no_broker_and_unknown_broker_are_errors() {
        let err = choose_broker(None, "shop", vec![]).unwrap_err();
        assert!(matches!(err, ClusterError::NoBrokers { .. }), "{err}");
        let err = choose_broker(Some("x"), "shop", vec![broker("main")]).unwrap_err();
        assert!(matches!(err, ClusterError::BrokerNotFound { .. }), "{err}");
        assert!(err.to_string().contains("Brokers there: main"), "{err}");
    }

    #[test]
    fn ready_pod_skips_unready_pending_and_terminating_pods() {
        let mut terminating = pod("main-0", "Running", "True");
        terminating.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pods = vec![
            terminating,
            pod("main-1", "Running", "False"),
            pod("main-3", "Running", "True"),
            pod("main-2", "Running", "True"),
            pod("main-4", "Pending", "True"),
        ];
        assert_eq!(ready_pod(&pods).as_deref(), Some("main-2"));
        assert_eq!(ready_pod(&pods[..2]), None);
        assert_eq!(ready_pod(&[]), None);
    }

    #[test]
    fn credentials_prefer_the_operator_user() {
        let s = secret(&[
            ("user", "worker"),
            ("password", "wp"),
            ("operator-user", "operator"),
            ("operator-password", "op"),
        ]);
        assert_eq!(credentials(&s).unwrap(), ("operator".into(), "op".into()));
    }

    #[test]
    fn credentials_fall_back_to_user_and_password() {
        let s = secret(&[
            ("user", "worker"),
            ("password", "wp"),
            ("operator-user", "o"),
        ]);
        assert_eq!(credentials(&s).unwrap(), ("worker".into(), "wp".into()));
        let err = credentials(&secret(&[("user", "worker")])).unwrap_err();
        assert!(err.to_string().contains("no key \"password\""), "{err}");
    }

    #[test]
    fn pods_are_selected_by_the_statefulset_selector() {
        let cluster = crate::desired::broker::cluster(&broker("main")).unwrap();
        assert_eq!(
            label_selector(&selector_labels(&cluster)),
            "app.kubernetes.io/component=broker,app.kubernetes.io/instance=main,app.kubernetes.io/name=nats"
        );
    }
}
