//! What a reconcile reads besides its own object: the objects it points to ([`Lookup`],
//! backed by the Kubernetes API or by memory for tests and `sluice dev`) and connections to
//! brokers ([`BrokerPool`], one cached connection per broker).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::de::DeserializeOwned;
use sluice_broker::ConnectOptions;
use tracing::info;

use super::Failure;
use super::watch::{Watched, WatchedObjects};
use crate::broker_cluster::{OPERATOR_PASSWORD_KEY, OPERATOR_USER_KEY};
use crate::crd::broker::client_url;
use crate::crd::{Broker, DeadLetterQueue, Queue, Topic};

/// Where referenced objects are read from.
#[derive(Clone)]
pub enum Lookup {
    /// The Kubernetes API.
    Kube(kube::Client),
    /// The controllers' watch stores, falling back to the Kubernetes API for an object the
    /// watch has not seen (it may be newer than the watch). Secrets are always read from the
    /// API: the operator does not watch them.
    Watched {
        /// The stores.
        objects: Arc<WatchedObjects>,
        /// The API, for what the stores do not hold.
        client: kube::Client,
    },
    /// An in-memory set of objects (tests, `sluice dev`).
    Memory(Arc<MemoryObjects>),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Kube(_) => f.write_str("Lookup::Kube"),
            Lookup::Watched { objects, .. } => {
                f.debug_tuple("Lookup::Watched").field(objects).finish()
            }
            Lookup::Memory(m) => f.debug_tuple("Lookup::Memory").field(m).finish(),
        }
    }
}

/// Objects held in memory, keyed by `(namespace, name)`.
#[derive(Debug, Default)]
pub struct MemoryObjects {
    /// Brokers.
    pub brokers: Mutex<BTreeMap<(String, String), Broker>>,
    /// Topics.
    pub topics: Mutex<BTreeMap<(String, String), Topic>>,
    /// Queues.
    pub queues: Mutex<BTreeMap<(String, String), Queue>>,
    /// Dead-letter queues.
    pub dlqs: Mutex<BTreeMap<(String, String), DeadLetterQueue>>,
    /// Credentials by Secret: `(user, password)`.
    pub credentials: Mutex<BTreeMap<(String, String), (String, String)>>,
}

impl MemoryObjects {
    /// Adds or replaces an object (its namespace and name come from its metadata).
    pub fn put<K: Stored>(&self, obj: K) {
        let key = (
            obj.meta().namespace.clone().unwrap_or_default(),
            obj.meta().name.clone().unwrap_or_default(),
        );
        if let Ok(mut map) = K::map(self).lock() {
            map.insert(key, obj);
        }
    }

    /// Removes an object.
    pub fn remove<K: Stored>(&self, namespace: &str, name: &str) {
        if let Ok(mut map) = K::map(self).lock() {
            map.remove(&(namespace.to_string(), name.to_string()));
        }
    }
}

/// A kind [`MemoryObjects`] can hold and the watch stores can serve.
pub trait Stored:
    Watched + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// The map of this kind.
    fn map(objects: &MemoryObjects) -> &Mutex<BTreeMap<(String, String), Self>>;
}

impl Stored for Broker {
    fn map(objects: &MemoryObjects) -> &Mutex<BTreeMap<(String, String), Self>> {
        &objects.brokers
    }
}
impl Stored for Topic {
    fn map(objects: &MemoryObjects) -> &Mutex<BTreeMap<(String, String), Self>> {
        &objects.topics
    }
}
impl Stored for Queue {
    fn map(objects: &MemoryObjects) -> &Mutex<BTreeMap<(String, String), Self>> {
        &objects.queues
    }
}
impl Stored for DeadLetterQueue {
    fn map(objects: &MemoryObjects) -> &Mutex<BTreeMap<(String, String), Self>> {
        &objects.dlqs
    }
}

impl Lookup {
    /// Reads one object; `None` when it does not exist.
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, Failure>
    where
        K: Stored + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match self {
            Lookup::Kube(client) => read::<K>(client, namespace, name).await,
            Lookup::Watched { objects, client } => match objects.get::<K>(namespace, name) {
                Some(Ok(obj)) => Ok(Some(obj)),
                Some(Err(invalid)) => Err(Failure::Missing {
                    reason: "ReferenceInvalid",
                    message: format!(
                        "{} {namespace}/{name} does not match the CRD schema ({invalid}); fix it",
                        K::kind(&())
                    ),
                }),
                None => read::<K>(client, namespace, name).await,
            },
            Lookup::Memory(m) => Ok(K::map(m)
                .lock()
                .ok()
                .and_then(|map| map.get(&(namespace.to_string(), name.to_string())).cloned())),
        }
    }

    /// Reads the credentials the operator connects with from a Secret: `operator-user` and
    /// `operator-password` when present, else `user` and `password`; `None` when the Secret
    /// does not exist.
    pub async fn credentials(
        &self,
        namespace: &str,
        secret: &str,
    ) -> Result<Option<(String, String)>, Failure> {
        match self {
            Lookup::Kube(client) | Lookup::Watched { client, .. } => {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let Some(s) = api.get_opt(secret).await.map_err(|e| {
                    Failure::kube(format!("failed to read Secret {namespace}/{secret}"), e)
                })?
                else {
                    return Ok(None);
                };
                let data = s.data.unwrap_or_default();
                let field = |k: &str| {
                    data.get(k)
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .ok_or_else(|| Failure::InvalidSpec(crate::crd::InvalidField::new(
                            "broker",
                            format!("Secret {secret} has no key {k:?}; it needs keys user and password"),
                        )))
                };
                // The operator's own user may delete and purge streams (workers may not);
                // a Secret without it (e.g. made for an external broker) falls back to the
                // worker credentials.
                if data.contains_key(OPERATOR_USER_KEY) && data.contains_key(OPERATOR_PASSWORD_KEY)
                {
                    return Ok(Some((
                        field(OPERATOR_USER_KEY)?,
                        field(OPERATOR_PASSWORD_KEY)?,
                    )));
                }
                Ok(Some((field("user")?, field("password")?)))
            }
            Lookup::Memory(m) => Ok(m
                .credentials
                .lock()
                .ok()
                .and_then(|c| c.get(&(namespace.to_string(), secret.to_string())).cloned())),
        }
    }
}

impl Lookup {
    /// The CA bundle (`ca.crt`) of Broker `namespace/broker`'s `<broker>-tls` Secret; `None`
    /// when the Secret or the key does not exist (and always for in-memory lookups).
    pub async fn broker_ca(
        &self,
        namespace: &str,
        broker: &str,
    ) -> Result<Option<Vec<u8>>, Failure> {
        match self {
            Lookup::Kube(client) | Lookup::Watched { client, .. } => {
                let name = crate::broker_cluster::tls_secret_name(broker);
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let secret = api.get_opt(&name).await.map_err(|e| {
                    Failure::kube(format!("failed to read Secret {namespace}/{name}"), e)
                })?;
                Ok(secret
                    .and_then(|s| s.data)
                    .and_then(|mut d| d.remove(crate::broker_cluster::CA_CERT_KEY))
                    .map(|b| b.0))
            }
            Lookup::Memory(_) => Ok(None),
        }
    }
}

/// Reads one object from the Kubernetes API; `None` when it does not exist.
async fn read<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<K>, Failure>
where
    K: Stored + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(|e| {
        Failure::kube(
            format!("failed to read {} {namespace}/{name}", K::kind(&())),
            e,
        )
    })
}

/// Cached broker connections, with per-broker URL overrides.
#[derive(Debug, Default)]
pub struct BrokerPool {
    overrides: BTreeMap<String, String>,
    connections: Mutex<HashMap<(String, String), Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    options: (String, Option<(String, String)>, Option<Vec<u8>>),
    broker: sluice_broker::Broker,
}

/// How long connecting to a broker may take before it counts as unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl BrokerPool {
    /// A pool where broker `name` is reached at `overrides[name]` instead of its client Service.
    pub fn new(overrides: BTreeMap<String, String>) -> Self {
        Self {
            overrides,
            connections: Mutex::default(),
        }
    }

    /// The URL(s) of a broker: the override, else its client Service.
    pub fn url(&self, namespace: &str, broker: &str) -> String {
        self.overrides
            .get(broker)
            .cloned()
            .unwrap_or_else(|| client_url(broker, namespace))
    }

    /// The connection already open to Broker `namespace/name`, if any (cleanup after the
    /// Broker resource was deleted).
    pub fn cached(&self, namespace: &str, name: &str) -> Option<sluice_broker::Broker> {
        self.connections
            .lock()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .map(|c| c.broker.clone())
    }

    /// Whether connections to `broker` use TLS: with an override URL only when it says
    /// `tls://` (a test or `sluice dev` server on loopback is plain), else whenever the
    /// Broker's TLS is not disabled.
    pub fn uses_tls(&self, broker: &Broker) -> bool {
        let name = kube::ResourceExt::name_any(broker);
        match self.overrides.get(&name) {
            Some(url) => url.trim_start().starts_with("tls://"),
            None => broker.tls_enabled(),
        }
    }

    /// A connection to `broker`, reusing the cached one while URL, credentials and CA are
    /// unchanged. With TLS (see [`BrokerPool::uses_tls`]) the server must present a
    /// certificate of the Broker's CA (`ca.crt` of `<broker>-tls`).
    pub async fn get(
        &self,
        lookup: &Lookup,
        namespace: &str,
        broker: &Broker,
    ) -> Result<sluice_broker::Broker, Failure> {
        let name = kube::ResourceExt::name_any(broker);
        let url = self.url(namespace, &name);
        let secret = broker.credentials_secret();
        let creds = lookup.credentials(namespace, &secret).await?;
        let ca_pem = if self.uses_tls(broker) {
            let Some(pem) = lookup.broker_ca(namespace, &name).await? else {
                return Err(Failure::Missing {
                    reason: "CertificatePending",
                    message: format!(
                        "Broker {name} serves TLS but Secret {} with its ca.crt does not exist yet",
                        crate::broker_cluster::tls_secret_name(&name)
                    ),
                });
            };
            Some(pem)
        } else {
            None
        };
        let ca = ca_pem
            .as_deref()
            .map(sluice_broker::tls::TrustedCa::from_pem)
            .transpose()
            .map_err(|e| Failure::broker_refused(format!("Broker {name}: {e}"), e))?;
        let key = (namespace.to_string(), name.clone());
        let options = (url.clone(), creds.clone(), ca_pem);
        if let Some(c) = self
            .connections
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
            && c.options == options
        {
            return Ok(c.broker);
        }
        let connect = ConnectOptions {
            urls: sluice_broker::client::parse_url_list(&url),
            user: creds.as_ref().map(|c| c.0.clone()),
            password: creds.as_ref().map(|c| c.1.clone()),
            name: "sluice-operator".into(),
            ca,
            ..Default::default()
        };
        let no_secret = if creds.is_none() {
            format!(" (Secret {secret} not found, connected without credentials)")
        } else {
            String::new()
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, sluice_broker::Broker::connect(&connect))
            .await
            .map_err(|e| {
                Failure::unavailable(
                    format!(
                        "timed out connecting to Broker {name} at {url}{no_secret}; check that its pods are ready"
                    ),
                    Some(Box::new(e)),
                )
            })?
            .map_err(|e| {
                Failure::unavailable(
                    format!("cannot connect to Broker {name} at {url}{no_secret}: {e}"),
                    Some(Box::new(e)),
                )
            })?;
        info!(broker = %name, %namespace, %url, "connected to broker");
        if let Ok(mut m) = self.connections.lock() {
            m.insert(
                key,
                Cached {
                    options,
                    broker: connected.clone(),
                },
            );
        }
        Ok(connected)
    }
}

/// What reconciles share besides the Kubernetes client.
#[derive(Debug, Clone)]
pub struct ReconcileContext {
    /// Where referenced objects are read.
    pub lookup: Lookup,
    /// Broker connections.
    pub pool: Arc<BrokerPool>,
    /// The fan-out relays copying topics into the queues they feed.
    pub relays: Arc<sluice_broker::FanoutRelays>,
}
