//! Which changes of an object matter, as a hash: to the object's own controller
//! ([`own_change`]) and to the objects that point to it ([`as_dependency`]). A status write
//! that changes neither (lag, offsets, timestamps) triggers nothing, so an idle cluster stays
//! write-free.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::core::DeserializeGuard;

use crate::controller::conditions;
use crate::crd::{Broker, Condition, ConditionStatus, DeadLetterQueue, Queue, Topic};

/// What a change of an object must touch to reconcile it: its spec (`generation`, which the
/// API server also bumps when it sets `deletionTimestamp`), labels, annotations, finalizers
/// (the finalizer helper waits for its own write) and deletion. A status write, ours
/// included, does not: it would otherwise trigger the next reconcile, which reads the broker
/// again and may write again. Volatile readings are refreshed by the resync.
pub fn own_change<K: Resource>(obj: &K) -> u64 {
    let meta = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut h);
    h.finish()
}

/// A kind other objects point to: what of it the pointing objects depend on.
pub trait Dependency: Resource {
    /// Whether it is ready to be used, as its status says.
    fn readiness(&self) -> Readiness;
}

/// The readiness of a dependency, as far as dependents care.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Readiness {
    /// Whether its `Ready` condition holds (`None` before the first reconcile).
    pub ready: Option<bool>,
    /// For a Broker: how many servers are ready.
    pub ready_servers: Option<i32>,
}

fn ready_condition(conditions: &[Condition]) -> Option<bool> {
    conditions::get(conditions, conditions::READY).map(|c| c.status == ConditionStatus::True)
}

impl Dependency for Broker {
    fn readiness(&self) -> Readiness {
        let status = self.status.as_ref();
        Readiness {
            ready: status.and_then(|s| ready_condition(&s.conditions)),
            ready_servers: status.and_then(|s| s.ready_replicas),
        }
    }
}

macro_rules! readiness_from_conditions {
    ($($kind:ty),*) => {$(
        impl Dependency for $kind {
            fn readiness(&self) -> Readiness {
                Readiness {
                    ready: self.status.as_ref().and_then(|s| ready_condition(&s.conditions)),
                    ready_servers: None,
                }
            }
        }
    )*};
}
readiness_from_conditions!(Topic, Queue, DeadLetterQueue);

/// What a change of a dependency must touch for its dependents to be reconciled: it was
/// recreated (`uid`), its spec changed (`generation`), it started or stopped being ready, or
/// it is being deleted. An object that does not match the CRD schema counts by its metadata.
pub fn as_dependency<K: Dependency>(guard: &DeserializeGuard<K>) -> u64 {
    let meta = guard.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut h);
    guard
        .0
        .as_ref()
        .ok()
        .map(Dependency::readiness)
        .hash(&mut h);
    h.finish()
}

/// The last fingerprint seen per object, shared by the filter on a controller's own trigger
/// stream and the task that sees deletions (which forgets them, so the map stays as large as
/// the set of live objects).
#[derive(Debug, Clone, Default)]
pub struct Fingerprints {
    seen: Arc<Mutex<HashMap<(String, String), u64>>>,
}

impl Fingerprints {
    /// Records `fingerprint` for `(namespace, name)`; true when it differs from the last one
    /// recorded (or none was).
    pub fn changed(&self, key: (String, String), fingerprint: u64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        seen.insert(key, fingerprint) != Some(fingerprint)
    }

    /// Whether `(namespace, name)` has a recorded fingerprint.
    pub fn knows(&self, key: &(String, String)) -> bool {
        self.seen.lock().is_ok_and(|s| s.contains_key(key))
    }

    /// Forgets `(namespace, name)` (it was deleted).
    pub fn forget(&self, key: &(String, String)) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(key);
        }
    }

    /// The keys recorded.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.seen
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BrokerSpec, BrokerStatus, TopicStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn topic(generation: i64, ready: Option<bool>, messages: u64) -> Topic {
        let mut t: Topic = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u1", "generation": generation},
            "spec": {"broker": "main", "partitions": 3}
        }))
        .expect("topic");
        let mut status = TopicStatus::default();
        if let Some(ready) = ready {
            let s = if ready {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                s,
                "R",
                format!("{messages} messages"),
                Some(generation),
            );
        }
        t.status = Some(status);
        t
    }

    fn guard<K>(k: K) -> DeserializeGuard<K> {
        DeserializeGuard(Ok(k))
    }

    #[test]
    fn a_status_reading_changes_neither_fingerprint() {
        let a = topic(1, Some(true), 10);
        let b = topic(1, Some(true), 99);
        assert_eq!(own_change(&a), own_change(&b));
        assert_eq!(as_dependency(&guard(a)), as_dependency(&guard(b)));
    }

    #[test]
    fn readiness_matters_to_dependents_only() {
        let not_ready = topic(1, Some(false), 0);
        let ready = topic(1, Some(true), 0);
        assert_eq!(own_change(&not_ready), own_change(&ready));
        assert_ne!(
            as_dependency(&guard(not_ready)),
            as_dependency(&guard(ready))
        );
    }

    #[test]
    fn spec_changes_and_deletion_matter_to_both() {
        let base = topic(1, Some(true), 0);
        let edited = topic(2, Some(true), 0);
        let mut deleting = topic(1, Some(true), 0);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        for other in [edited, deleting] {
            assert_ne!(own_change(&base), own_change(&other));
            assert_ne!(
                as_dependency(&guard(base.clone())),
                as_dependency(&guard(other))
            );
        }
    }

    #[test]
    fn a_broker_gaining_a_ready_server_matters_to_dependents() {
        let with = |ready| {
            let mut b = Broker::new("main", BrokerSpec::with_replicas(3));
            b.status = Some(BrokerStatus {
                ready_replicas: Some(ready),
                ..BrokerStatus::default()
            });
            guard(b)
        };
        assert_ne!(as_dependency(&with(1)), as_dependency(&with(2)));
        assert_eq!(as_dependency(&with(2)), as_dependency(&with(2)));
    }

    #[test]
    fn fingerprints_report_changes_and_forget_deleted_objects() {
        let f = Fingerprints::default();
        let key = ("shop".to_string(), "orders".to_string());
        assert!(f.changed(key.clone(), 1));
        assert!(!f.changed(key.clone(), 1));
        assert!(f.changed(key.clone(), 2));
        assert!(f.knows(&key));
        f.forget(&key);
        assert!(!f.knows(&key));
        assert!(f.changed(key, 2));
    }
}
