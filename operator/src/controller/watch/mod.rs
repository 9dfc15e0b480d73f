//! Watches: one shared watch per kind and scope (all namespaces, or each namespace the
//! operator is limited to), feeding
//!
//! - a store ([`WatchedObjects`]) that reconciles read referenced objects from, instead of
//!   fetching them from the API server each time (see [`super::context::Lookup::Watched`]);
//! - the kind's own controller, with only the changes it must act on
//!   ([`fingerprint::own_change`]: spec, metadata, deletion; not status);
//! - the controllers of the objects that point to it, when it changes in a way they care
//!   about ([`fingerprint::as_dependency`]: recreated, spec, readiness, deletion), through
//!   [`Triggers`] and the table in [`dependents`]. A Topic waiting for its Broker is
//!   reconciled when the Broker becomes ready, not at the next backoff or resync.

pub mod dependents;
pub mod fingerprint;

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, reflector::ReflectHandle};
use tracing::{debug, info, warn};

use self::dependents::Dependents;
use self::fingerprint::Fingerprints;
use super::ns_name;
use crate::crd::{Broker, ConsumerGroup, DeadLetterQueue, Queue, Topic};

/// How many changes a shared watch buffers for a controller that is busy; the watch waits
/// when a controller falls this far behind.
const SUBSCRIBER_BUFFER: usize = 1024;

/// The stores of one watch scope.
#[derive(Clone)]
pub struct ScopeStores {
    /// The namespace watched, `None` for all.
    pub namespace: Option<String>,
    /// Brokers.
    pub brokers: Store<DeserializeGuard<Broker>>,
    /// Topics.
    pub topics: Store<DeserializeGuard<Topic>>,
    /// Queues.
    pub queues: Store<DeserializeGuard<Queue>>,
    /// Dead-letter queues.
    pub dlqs: Store<DeserializeGuard<DeadLetterQueue>>,
    /// Consumer groups.
    pub groups: Store<DeserializeGuard<ConsumerGroup>>,
}

impl Debug for ScopeStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeStores")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Every object the controllers watch, by scope.
#[derive(Debug, Default)]
pub struct WatchedObjects {
    scopes: Vec<ScopeStores>,
}

/// A kind whose objects can be read from the watch stores.
pub trait Watched: Resource<DynamicType = ()> + Clone + 'static {
    /// The store of this kind in a scope.
    fn store(scope: &ScopeStores) -> &Store<DeserializeGuard<Self>>;
}

impl Watched for Broker {
    fn store(scope: &ScopeStores) -> &Store<DeserializeGuard<Self>> {
        &scope.brokers
    }
}
impl Watched for Topic {
    fn store(scope: &ScopeStores) -> &Store<DeserializeGuard<Self>> {
        &scope.topics
    }
}
impl Watched for Queue {
    fn store(scope: &ScopeStores) -> &Store<DeserializeGuard<Self>> {
        &scope.queues
    }
}
impl Watched for DeadLetterQueue {
    fn store(scope: &ScopeStores) -> &Store<DeserializeGuard<Self>> {
        &scope.dlqs
    }
}

impl WatchedObjects {
    /// The stores of every scope.
    pub fn new(scopes: Vec<ScopeStores>) -> Self {
        Self { scopes }
    }

    /// The scope that watches `namespace`.
    fn scope(&self, namespace: &str) -> Option<&ScopeStores> {
        self.scopes
            .iter()
            .find(|s| s.namespace.as_deref().is_none_or(|n| n == namespace))
    }

    /// The object as last seen by the watch: `None` when the watch has not seen it (it does
    /// not exist, is newer than the watch, or the namespace is not watched),
    /// `Some(Err(..))` when it does not match the CRD schema.
    pub fn get<K: Watched>(&self, namespace: &str, name: &str) -> Option<Result<K, InvalidObject>> {
        let scope = self.scope(namespace)?;
        let guard = K::store(scope).get(&ObjectRef::new(name).within(namespace))?;
        Some(guard.0.clone())
    }
}

/// One kind's shared watch in one scope, before it runs.
pub struct SharedWatch<K: Resource<DynamicType = ()> + Clone + 'static> {
    reader: Store<DeserializeGuard<K>>,
    writer: Writer<DeserializeGuard<K>>,
    own: Fingerprints,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Debug for SharedWatch<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWatch")
            .field("kind", &K::kind(&()))
            .finish_non_exhaustive()
    }
}

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    /// A watch with an empty store.
    pub fn new() -> Self {
        let (reader, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        Self {
            reader,
            writer,
            own: Fingerprints::default(),
        }
    }

    /// The store the watch fills.
    pub fn reader(&self) -> Store<DeserializeGuard<K>> {
        self.reader.clone()
    }

    /// The trigger stream of the kind's own controller: the objects whose
    /// [`fingerprint::own_change`] changed. `None` only if the store was not made shared.
    pub fn own_changes(
        &self,
    ) -> Option<impl Stream<Item = Arc<DeserializeGuard<K>>> + Send + 'static> {
        let handle: ReflectHandle<DeserializeGuard<K>> = self.writer.subscribe()?;
        let own = self.own.clone();
        Some(handle.filter(move |obj| {
            let changed = own.changed(ns_name(obj.as_ref()), fingerprint::own_change(obj.as_ref()));
            std::future::ready(changed)
        }))
    }

    /// Runs the watch on `api` until `stop`: fills the store, feeds the subscribers, and calls
    /// `changed(namespace, name)` when an object changed as dependents see it (`as_dependency`,
    /// `None` for kinds nothing points to), appeared after the first listing, or was deleted.
    pub async fn run(
        self,
        kind: &'static str,
        api: Api<DeserializeGuard<K>>,
        as_dependency: Option<fn(&DeserializeGuard<K>) -> u64>,
        changed: impl Fn(&str, &str) + Send,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        let mut tracker = DependencyTracker {
            fingerprints: Fingerprints::default(),
            listed: HashSet::new(),
            synced: false,
        };
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect_shared(self.writer);
        let mut events = std::pin::pin!(events);
        let mut stop = std::pin::pin!(stop);
        loop {
            let event = tokio::select! {
                () = &mut stop => break,
                event = events.next() => event,
            };
            match event {
                None => break,
                Some(Err(e)) => warn!(kind, error = %e, "watch failed; retrying with backoff"),
                Some(Ok(event)) => {
                    for (ns, name) in tracker.observe(&event, as_dependency, &self.own) {
                        changed(&ns, &name);
                    }
                }
            }
        }
        debug!(kind, "watch stopped");
    }
}

impl<K> Default for SharedWatch<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

/// Tells, from a kind's watch events, which objects changed as their dependents see it.
struct DependencyTracker {
    fingerprints: Fingerprints,
    /// Keys seen in the listing under way (to find deletions missed while disconnected).
    listed: HashSet<(String, String)>,
    /// Whether the first listing finished: before it, every object is new and its
    /// dependents are reconciled anyway as the controllers start.
    synced: bool,
}

impl DependencyTracker {
    fn observe<K: Resource>(
        &mut self,
        event: &watcher::Event<DeserializeGuard<K>>,
        as_dependency: Option<fn(&DeserializeGuard<K>) -> u64>,
        own: &Fingerprints,
    ) -> Vec<(String, String)> {
        let Some(fingerprint) = as_dependency else {
            if let watcher::Event::Delete(obj) = event {
                own.forget(&ns_name(obj));
            }
            return Vec::new();
        };
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                let key = ns_name(obj);
                if matches!(event, watcher::Event::InitApply(_)) {
                    self.listed.insert(key.clone());
                }
                let changed = self.fingerprints.changed(key.clone(), fingerprint(obj));
                if changed && self.synced {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            watcher::Event::Delete(obj) => {
                let key = ns_name(obj);
                own.forget(&key);
                self.fingerprints.forget(&key);
                vec![key]
            }
            watcher::Event::Init => {
                self.listed.clear();
                Vec::new()
            }
            watcher::Event::InitDone => {
                let gone: Vec<_> = self
                    .fingerprints
                    .keys()
                    .into_iter()
                    .filter(|k| !self.listed.contains(k))
                    .collect();
                for key in &gone {
                    own.forget(key);
                    self.fingerprints.forget(key);
                }
                self.listed.clear();
                let first = !self.synced;
                self.synced = true;
                if first { Vec::new() } else { gone }
            }
        }
    }
}

/// Where the reconciles of dependents are sent, per kind, for one scope.
#[derive(Clone)]
pub struct Triggers {
    stores: ScopeStores,
    topics: UnboundedSender<ObjectRef<DeserializeGuard<Topic>>>,
    queues: UnboundedSender<ObjectRef<DeserializeGuard<Queue>>>,
    dlqs: UnboundedSender<ObjectRef<DeserializeGuard<DeadLetterQueue>>>,
    groups: UnboundedSender<ObjectRef<DeserializeGuard<ConsumerGroup>>>,
}

impl Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("stores", &self.stores)
            .finish_non_exhaustive()
    }
}

/// The receiving ends of [`Triggers`], one per dependent kind, for `Controller::reconcile_on`.
pub struct TriggerStreams {
    /// Topics to reconcile.
    pub topics: UnboundedReceiver<ObjectRef<DeserializeGuard<Topic>>>,
    /// Queues to reconcile.
    pub queues: UnboundedReceiver<ObjectRef<DeserializeGuard<Queue>>>,
    /// Dead-letter queues to reconcile.
    pub dlqs: UnboundedReceiver<ObjectRef<DeserializeGuard<DeadLetterQueue>>>,
    /// Consumer groups to reconcile.
    pub groups: UnboundedReceiver<ObjectRef<DeserializeGuard<ConsumerGroup>>>,
}

impl Debug for TriggerStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerStreams").finish_non_exhaustive()
    }
}

impl Triggers {
    /// Triggers finding dependents in `stores`, and the streams they feed.
    pub fn new(stores: ScopeStores) -> (Self, TriggerStreams) {
        let (topics, topics_rx) = unbounded();
        let (queues, queues_rx) = unbounded();
        let (dlqs, dlqs_rx) = unbounded();
        let (groups, groups_rx) = unbounded();
        (
            Self {
                stores,
                topics,
                queues,
                dlqs,
                groups,
            },
            TriggerStreams {
                topics: topics_rx,
                queues: queues_rx,
                dlqs: dlqs_rx,
                groups: groups_rx,
            },
        )
    }

    /// Broker `namespace/name` changed.
    pub fn broker_changed(&self, namespace: &str, name: &str) {
        self.send(
            "Broker",
            name,
            dependents::of_broker(&self.stores, namespace, name),
        );
    }

    /// Topic `namespace/name` changed.
    pub fn topic_changed(&self, namespace: &str, name: &str) {
        self.send(
            "Topic",
            name,
            dependents::of_topic(&self.stores, namespace, name),
        );
    }

    /// Queue `namespace/name` changed.
    pub fn queue_changed(&self, namespace: &str, name: &str) {
        self.send(
            "Queue",
            name,
            dependents::of_queue(&self.stores, namespace, name),
        );
    }

    /// DeadLetterQueue `namespace/name` changed.
    pub fn dlq_changed(&self, namespace: &str, name: &str) {
        self.send(
            "DeadLetterQueue",
            name,
            dependents::of_dlq(&self.stores, namespace, name),
        );
    }

    fn send(&self, kind: &str, name: &str, dependents: Dependents) {
        if dependents.is_empty() {
            return;
        }
        info!(
            kind,
            name,
            dependents = dependents.len(),
            "dependency changed: reconciling what points to it"
        );
        // A closed channel means the controller stopped (shutdown): nothing to trigger.
        for r in dependents.topics {
            let _ = self.topics.unbounded_send(r);
        }
        for r in dependents.queues {
            let _ = self.queues.unbounded_send(r);
        }
        for r in dependents.dlqs {
            let _ = self.dlqs.unbounded_send(r);
        }
        for r in dependents.groups {
            let _ = self.groups.unbounded_send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint::as_dependency;
    use super::*;
    use crate::controller::conditions;
    use crate::crd::{BrokerSpec, BrokerStatus, ConditionStatus};

    fn broker(name: &str, ready: Option<i32>, message: &str) -> DeserializeGuard<Broker> {
        let mut b = Broker::new(name, BrokerSpec::with_replicas(3));
        b.metadata.namespace = Some("shop".into());
        b.metadata.uid = Some(format!("uid-{name}"));
        b.metadata.generation = Some(1);
        let mut status = BrokerStatus {
            ready_replicas: ready,
            ..BrokerStatus::default()
        };
        conditions::set(
            &mut status.conditions,
            conditions::READY,
            ConditionStatus::True,
            "Ready",
            message,
            Some(1),
        );
        b.status = Some(status);
        DeserializeGuard(Ok(b))
    }

    fn tracker() -> (DependencyTracker, Fingerprints) {
        (
            DependencyTracker {
                fingerprints: Fingerprints::default(),
                listed: HashSet::new(),
                synced: false,
            },
            Fingerprints::default(),
        )
    }

    fn key(name: &str) -> (String, String) {
        ("shop".into(), name.into())
    }

    #[test]
    fn the_first_listing_triggers_nothing_later_changes_do() {
        let (mut t, own) = tracker();
        let dep = Some(as_dependency::<Broker> as fn(&DeserializeGuard<Broker>) -> u64);
        assert!(t.observe(&watcher::Event::Init, dep, &own).is_empty());
        let listed = broker("main", Some(1), "1 of 3");
        assert!(
            t.observe(&watcher::Event::InitApply(listed), dep, &own)
                .is_empty()
        );
        assert!(t.observe(&watcher::Event::InitDone, dep, &own).is_empty());
        // A status message that changes nothing dependents care about.
        let reworded = broker("main", Some(1), "one of three");
        assert!(
            t.observe(&watcher::Event::Apply(reworded), dep, &own)
                .is_empty()
        );
        // One more server ready.
        let more = broker("main", Some(2), "2 of 3");
        assert_eq!(
            t.observe(&watcher::Event::Apply(more), dep, &own),
            [key("main")]
        );
        // A Broker created after the first listing.
        let new = broker("side", None, "");
        assert_eq!(
            t.observe(&watcher::Event::Apply(new), dep, &own),
            [key("side")]
        );
    }

    #[test]
    fn deletions_trigger_and_are_forgotten_even_when_missed_while_disconnected() {
        let (mut t, own) = tracker();
        let dep = Some(as_dependency::<Broker> as fn(&DeserializeGuard<Broker>) -> u64);
        for name in ["main", "side"] {
            let b = broker(name, Some(3), "ok");
            own.changed(key(name), 1);
            t.observe(&watcher::Event::InitApply(b), dep, &own);
        }
        t.observe(&watcher::Event::InitDone, dep, &own);
        assert_eq!(
            t.observe(
                &watcher::Event::Delete(broker("main", Some(3), "ok")),
                dep,
                &own
            ),
            [key("main")]
        );
        assert!(!own.knows(&key("main")));
        // Relisted after a disconnect: `side` is gone without a Delete event.
        t.observe(&watcher::Event::Init, dep, &own);
        assert!(t.observe(&watcher::Event::InitDone, dep, &own) == [key("side")]);
        assert!(!own.knows(&key("side")));
    }

    #[test]
    fn kinds_nothing_points_to_only_forget_deleted_objects() {
        let (mut t, own) = tracker();
        own.changed(key("main"), 1);
        let none: Option<fn(&DeserializeGuard<Broker>) -> u64> = None;
        assert!(
            t.observe(&watcher::Event::Apply(broker("main", None, "")), none, &own)
                .is_empty()
        );
        assert!(
            t.observe(
                &watcher::Event::Delete(broker("main", None, "")),
                none,
                &own
            )
            .is_empty()
        );
        assert!(!own.knows(&key("main")));
    }
}
