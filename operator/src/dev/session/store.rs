//! The manifests as the in-memory objects the reconcile core reads ([`MemoryObjects`]), and
//! the Brokers the embedded one stands in for.

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::controller::context::{MemoryObjects, Stored};
use crate::controller::ns_name;
use crate::crd::{Broker, BrokerSpec, DeadLetterQueue, Queue, Topic};
use crate::dev::manifest::Manifests;

/// Every broker name the manifests mention.
pub(super) fn broker_names(m: &Manifests) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = m.brokers.iter().map(|b| b.name_any()).collect();
    names.extend(m.topics.iter().map(|t| t.spec.broker.clone()));
    names.extend(m.queues.iter().map(|q| q.spec.broker.clone()));
    names.extend(m.dlqs.iter().map(|d| d.spec.broker.clone()));
    names.extend(m.groups.iter().filter_map(|g| g.spec.broker.clone()));
    names
}

pub(super) fn namespaces(m: &Manifests) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(m.topics.iter().map(|o| ns_name(o).0));
    out.extend(m.queues.iter().map(|o| ns_name(o).0));
    out.extend(m.dlqs.iter().map(|o| ns_name(o).0));
    out.extend(m.groups.iter().map(|o| ns_name(o).0));
    out
}

pub(super) fn dev_broker(namespace: &str, name: &str) -> Broker {
    let mut b = Broker::new(name, BrokerSpec::with_replicas(1));
    b.metadata.namespace = Some(namespace.to_string());
    b
}

pub(super) fn replace_all(objects: &MemoryObjects, m: &Manifests) {
    fn reset<K: Stored>(objects: &MemoryObjects, items: &[K]) {
        if let Ok(mut map) = K::map(objects).lock() {
            map.clear();
        }
        for item in items {
            objects.put(item.clone());
        }
    }
    reset::<Broker>(objects, &m.brokers);
    reset::<Topic>(objects, &m.topics);
    reset::<Queue>(objects, &m.queues);
    reset::<DeadLetterQueue>(objects, &m.dlqs);
}
