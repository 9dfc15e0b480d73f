//! What a reconcile reads besides its own object: the objects it points to ([`Lookup`],
//! backed by the Kubernetes API or by memory for tests and `sluice dev`) and connections to
//! brokers ([`BrokerPool`], one cached connection per broker).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::de::DeserializeOwned;
use sluice_broker::{ConnectOptions, StreamCatalog};
use tracing::{debug, info, instrument, warn};

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

/// Broker connections: one per Broker, shared by every reconcile and reconnecting on its
/// own, with per-broker URL overrides.
///
/// Reconciles that need the same Broker at once (an operator restart reconciles everything
/// together) wait for one connect instead of each opening a connection of its own. A
/// connection is replaced only when the Broker's URL or credentials change, and dropped by
/// [`BrokerPool::prune`] once its Broker has been gone for a while.
#[derive(Debug, Default)]
pub struct BrokerPool {
    overrides: BTreeMap<String, String>,
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
}

/// One Broker's connection; the async lock is held while connecting, so concurrent callers
/// wait for that connect instead of making their own.
#[derive(Debug, Default)]
struct Slot {
    connection: tokio::sync::Mutex<SlotState>,
    /// When the Broker was first seen missing by [`BrokerPool::prune`].
    absent_since: Mutex<Option<Instant>>,
    /// The last listing of the Broker's streams; the async lock is held while listing, so
    /// concurrent resyncs share one listing.
    catalog: tokio::sync::Mutex<Option<Arc<StreamCatalog>>>,
}

/// A Broker's connection, or why the last attempt failed.
#[derive(Debug, Default)]
struct SlotState {
    open: Option<Cached>,
    /// The last failed connect: callers that queued behind it get its error instead of
    /// each waiting out a timeout of their own.
    failed: Option<FailedConnect>,
}

struct FailedConnect {
    at: Instant,
    options: ConnectionOptions,
    message: String,
}

/// How long a failed connect answers for the same Broker before the next attempt.
const FAILED_CONNECT_HOLD: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Cached {
    options: ConnectionOptions,
    broker: sluice_broker::Broker,
}

/// What a Broker connection is made with: URL, credentials (user, password) and CA (PEM).
type ConnectionOptions = (String, Option<(String, String)>, Option<Vec<u8>>);

/// What a connection was made with; its `Debug` output never shows the password.
fn debug_options(f: &mut std::fmt::DebugStruct<'_, '_>, (url, creds, ca): &ConnectionOptions) {
    f.field("url", url)
        .field("user", &creds.as_ref().map(|c| &c.0))
        .field("password", &creds.as_ref().map(|_| "<redacted>"))
        .field("ca", &ca.as_ref().map(|c| c.len()));
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Cached");
        debug_options(&mut d, &self.options);
        d.field("broker", &self.broker).finish()
    }
}

impl std::fmt::Debug for FailedConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("FailedConnect");
        d.field("at", &self.at);
        debug_options(&mut d, &self.options);
        d.field("message", &self.message).finish()
    }
}

/// How long connecting to a broker may take before it counts as unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl BrokerPool {
    /// A pool where broker `name` is reached at `overrides[name]` instead of its client Service.
    pub fn new(overrides: BTreeMap<String, String>) -> Self {
        Self {
            overrides,
            slots: Mutex::default(),
        }
    }

    /// The URL(s) of a broker: the override, else its client Service.
    pub fn url(&self, namespace: &str, broker: &str) -> String {
        self.overrides
            .get(broker)
            .cloned()
            .unwrap_or_else(|| client_url(broker, namespace))
    }

    fn slot(&self, namespace: &str, name: &str) -> Option<Arc<Slot>> {
        let mut slots = self.slots.lock().ok()?;
        Some(
            slots
                .entry((namespace.to_string(), name.to_string()))
                .or_default()
                .clone(),
        )
    }

    /// The open connection to a broker, if there is one (for cleaning up after its Broker
    /// resource was deleted).
    pub async fn cached(&self, namespace: &str, name: &str) -> Option<sluice_broker::Broker> {
        let slot = self
            .slots
            .lock()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()?;
        let state = slot.connection.lock().await;
        state.open.as_ref().map(|c| c.broker.clone())
    }

    /// How many Brokers the pool holds a connection to.
    pub async fn open_connections(&self) -> usize {
        let slots: Vec<Arc<Slot>> = match self.slots.lock() {
            Ok(s) => s.values().cloned().collect(),
            Err(_) => return 0,
        };
        let mut open = 0;
        for slot in slots {
            if slot.connection.lock().await.open.is_some() {
                open += 1;
            }
        }
        open
    }

    /// Drops the connection of every Broker that `exists` says is gone and has been gone for
    /// at least `grace` (measured from the first call that found it missing, at `now`): the
    /// grace lets the cleanup of a deleted namespace's groups still reach the servers.
    /// Returns the `(namespace, name)` of the connections dropped.
    pub fn prune(
        &self,
        exists: impl Fn(&str, &str) -> bool,
        grace: Duration,
        now: Instant,
    ) -> Vec<(String, String)> {
        let Ok(mut slots) = self.slots.lock() else {
            return Vec::new();
        };
        let mut dropped = Vec::new();
        slots.retain(|(namespace, name), slot| {
            let Ok(mut since) = slot.absent_since.lock() else {
                return true;
            };
            if exists(namespace, name) {
                *since = None;
                return true;
            }
            let first_missing = *since.get_or_insert(now);
            if now.saturating_duration_since(first_missing) < grace {
                return true;
            }
            dropped.push((namespace.clone(), name.clone()));
            false
        });
        dropped
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

    /// A listing of every stream of Broker `namespace/name` (through `connection`) no older
    /// than `max_age`: the last one when it is young enough, else a new one that concurrent
    /// callers share. `None` when listing fails (the caller then asks per stream).
    #[instrument(skip(self, connection))]
    pub async fn stream_catalog(
        &self,
        namespace: &str,
        name: &str,
        connection: &sluice_broker::Broker,
        max_age: Duration,
    ) -> Option<Arc<StreamCatalog>> {
        let slot = self.slot(namespace, name)?;
        let mut catalog = slot.catalog.lock().await;
        if let Some(c) = catalog.as_ref()
            && c.read_at().elapsed() < max_age
        {
            return Some(c.clone());
        }
        match connection.stream_catalog().await {
            Ok(listed) => {
                debug!(streams = listed.len(), "listed the broker's streams");
                let listed = Arc::new(listed);
                *catalog = Some(listed.clone());
                Some(listed)
            }
            Err(e) => {
                warn!(error = %e, "cannot list the broker's streams; checking each stream instead");
                None
            }
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
        let options = (url.clone(), creds.clone(), ca_pem);
        let Some(slot) = self.slot(namespace, &name) else {
            return Err(Failure::unavailable(
                "the operator's broker connection pool is unusable (a thread panicked while holding it); restart the operator".to_string(),
                None,
            ));
        };
        let mut state = slot.connection.lock().await;
        if let Some(c) = state.open.as_ref()
            && c.options == options
        {
            return Ok(c.broker.clone());
        }
        if let Some(f) = state.failed.as_ref()
            && f.options == options
            && f.at.elapsed() < FAILED_CONNECT_HOLD
        {
            return Err(Failure::unavailable(f.message.clone(), None));
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
            })
            .and_then(|r| r.map_err(|e| {
                Failure::unavailable(
                    format!("cannot connect to Broker {name} at {url}{no_secret}: {e}"),
                    Some(Box::new(e)),
                )
            }));
        let connected = match connected {
            Ok(c) => c,
            Err(failure) => {
                state.failed = Some(FailedConnect {
                    at: Instant::now(),
                    options,
                    message: failure.to_string(),
                });
                return Err(failure);
            }
        };
        info!(broker = %name, %namespace, %url, "connected to broker");
        state.failed = None;
        state.open = Some(Cached {
            options,
            broker: connected.clone(),
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_brokers_connection_is_dropped_after_the_grace_only() {
        let pool = BrokerPool::default();
        assert!(pool.slot("shop", "main").is_some());
        assert!(pool.slot("shop", "old").is_some());
        let grace = Duration::from_secs(120);
        let t0 = Instant::now();
        let exists = |_: &str, name: &str| name == "main";
        assert!(
            pool.prune(exists, grace, t0).is_empty(),
            "first seen missing"
        );
        assert!(pool.prune(exists, grace, t0 + grace / 2).is_empty());
        assert_eq!(
            pool.prune(exists, grace, t0 + grace),
            [("shop".to_string(), "old".to_string())]
        );
        assert!(pool.prune(exists, grace, t0 + grace * 10).is_empty());
        let slots = pool.slots.lock().unwrap();
        assert!(slots.contains_key(&("shop".to_string(), "main".to_string())));
    }

    #[test]
    fn a_broker_that_comes_back_starts_its_grace_anew() {
        let pool = BrokerPool::default();
        pool.slot("shop", "main");
        let grace = Duration::from_secs(120);
        let t0 = Instant::now();
        assert!(pool.prune(|_, _| false, grace, t0).is_empty());
        assert!(pool.prune(|_, _| true, grace, t0 + grace / 2).is_empty());
        assert!(
            pool.prune(|_, _| false, grace, t0 + grace).is_empty(),
            "missing again only since now"
        );
        assert_eq!(pool.prune(|_, _| false, grace, t0 + grace * 2).len(), 1);
    }
}
