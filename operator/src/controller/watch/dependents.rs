//! Who points to whom, read from the watch stores: when a Broker, Topic, Queue or
//! DeadLetterQueue changes in a way its dependents care about (see
//! [`super::fingerprint::as_dependency`]), these are the objects to reconcile.
//!
//! | changed          | reconciled                                                  |
//! |------------------|-------------------------------------------------------------|
//! | Broker           | its Topics, Queues, DeadLetterQueues, ConsumerGroups         |
//! | Topic            | Queues it feeds, ConsumerGroups reading it                   |
//! | Queue            | ConsumerGroups reading it                                    |
//! | DeadLetterQueue  | ConsumerGroups dead-lettering into it                        |

use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};

use super::ScopeStores;
use crate::crd::{ConsumerGroup, DeadLetterQueue, Queue, Topic};

/// The objects to reconcile after a dependency changed.
#[derive(Debug, Default, PartialEq)]
pub struct Dependents {
    /// Topics.
    pub topics: Vec<ObjectRef<DeserializeGuard<Topic>>>,
    /// Queues.
    pub queues: Vec<ObjectRef<DeserializeGuard<Queue>>>,
    /// Dead-letter queues.
    pub dlqs: Vec<ObjectRef<DeserializeGuard<DeadLetterQueue>>>,
    /// Consumer groups.
    pub groups: Vec<ObjectRef<DeserializeGuard<ConsumerGroup>>>,
}

impl Dependents {
    /// Whether there is nothing to reconcile.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
            && self.queues.is_empty()
            && self.dlqs.is_empty()
            && self.groups.is_empty()
    }

    /// How many objects there are to reconcile.
    pub fn len(&self) -> usize {
        self.topics.len() + self.queues.len() + self.dlqs.len() + self.groups.len()
    }
}

/// The valid objects of `store` in `namespace` for which `points_here` holds.
fn referring<K>(
    store: &Store<DeserializeGuard<K>>,
    namespace: &str,
    points_here: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<DeserializeGuard<K>>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut refs: Vec<_> = store
        .state()
        .iter()
        .filter_map(|guard| {
            let obj = guard.0.as_ref().ok()?;
            (obj.meta().namespace.as_deref() == Some(namespace) && points_here(obj))
                .then(|| ObjectRef::from_obj(guard.as_ref()))
        })
        .collect();
    refs.sort_by(|a, b| a.name.cmp(&b.name));
    refs
}

/// Whether group `g` in `namespace` runs on Broker `broker`: its `spec.broker`, else its
/// source's (as the store knows it).
fn group_on_broker(stores: &ScopeStores, namespace: &str, g: &ConsumerGroup, broker: &str) -> bool {
    if let Some(b) = g.spec.broker.as_deref() {
        return b == broker;
    }
    let source_broker = if let Some(t) = &g.spec.source.topic {
        stores
            .topics
            .get(&ObjectRef::new(t).within(namespace))
            .and_then(|t| t.0.as_ref().ok().map(|t| t.spec.broker.clone()))
    } else if let Some(q) = &g.spec.source.queue {
        stores
            .queues
            .get(&ObjectRef::new(q).within(namespace))
            .and_then(|q| q.0.as_ref().ok().map(|q| q.spec.broker.clone()))
    } else {
        None
    };
    source_broker.is_some_and(|b| b == broker)
}

/// Everything on Broker `namespace/name`.
pub fn of_broker(stores: &ScopeStores, namespace: &str, name: &str) -> Dependents {
    Dependents {
        topics: referring(&stores.topics, namespace, |t| t.spec.broker == name),
        queues: referring(&stores.queues, namespace, |q| q.spec.broker == name),
        dlqs: referring(&stores.dlqs, namespace, |d| d.spec.broker == name),
        groups: referring(&stores.groups, namespace, |g| {
            group_on_broker(stores, namespace, g, name)
        }),
    }
}

/// The Queues fed by Topic `namespace/name` and the groups reading it.
pub fn of_topic(stores: &ScopeStores, namespace: &str, name: &str) -> Dependents {
    Dependents {
        queues: referring(&stores.queues, namespace, |q| {
            q.spec.sources.iter().any(|s| s.topic == name)
        }),
        groups: referring(&stores.groups, namespace, |g| {
            g.spec.source.topic.as_deref() == Some(name)
        }),
        ..Dependents::default()
    }
}

/// The groups reading Queue `namespace/name`.
pub fn of_queue(stores: &ScopeStores, namespace: &str, name: &str) -> Dependents {
    Dependents {
        groups: referring(&stores.groups, namespace, |g| {
            g.spec.source.queue.as_deref() == Some(name)
        }),
        ..Dependents::default()
    }
}

/// The groups dead-lettering into DeadLetterQueue `namespace/name`.
pub fn of_dlq(stores: &ScopeStores, namespace: &str, name: &str) -> Dependents {
    Dependents {
        groups: referring(&stores.groups, namespace, |g| {
            g.spec.dead_letter.as_ref().is_some_and(|d| d.queue == name)
        }),
        ..Dependents::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn store<K>(objects: Vec<serde_json::Value>) -> Store<DeserializeGuard<K>>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    {
        let (reader, mut writer) = reflector::store::<DeserializeGuard<K>>();
        for o in objects {
            let guard: DeserializeGuard<K> = serde_json::from_value(o).expect("object");
            writer.apply_watcher_event(&Event::Apply(guard));
        }
        reader
    }

    fn obj(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": kind,
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    /// Two brokers in `shop` and one in `other`; objects on each.
    fn stores() -> ScopeStores {
        ScopeStores {
            namespace: None,
            brokers: store(vec![]),
            topics: store(vec![
                obj(
                    "Topic",
                    "shop",
                    "orders",
                    json!({"broker": "main", "partitions": 3}),
                ),
                obj(
                    "Topic",
                    "shop",
                    "audit",
                    json!({"broker": "side", "partitions": 1}),
                ),
                obj(
                    "Topic",
                    "other",
                    "orders",
                    json!({"broker": "main", "partitions": 1}),
                ),
            ]),
            queues: store(vec![
                obj(
                    "Queue",
                    "shop",
                    "emails",
                    json!({"broker": "main", "sources": [{"topic": "orders"}]}),
                ),
                obj("Queue", "shop", "jobs", json!({"broker": "main"})),
            ]),
            dlqs: store(vec![obj(
                "DeadLetterQueue",
                "shop",
                "failed",
                json!({"broker": "main"}),
            )]),
            groups: store(vec![
                // On main through its source.
                obj(
                    "ConsumerGroup",
                    "shop",
                    "billing",
                    json!({"source": {"topic": "orders"}, "deadLetter": {"queue": "failed"}}),
                ),
                // On side through its source.
                obj(
                    "ConsumerGroup",
                    "shop",
                    "auditors",
                    json!({"source": {"topic": "audit"}}),
                ),
                // On main by name.
                obj(
                    "ConsumerGroup",
                    "shop",
                    "mailers",
                    json!({"broker": "main", "source": {"queue": "emails"}}),
                ),
                // Source not created yet: on no broker it can be known.
                obj(
                    "ConsumerGroup",
                    "shop",
                    "early",
                    json!({"source": {"queue": "later"}}),
                ),
                // Not a valid group: skipped.
                obj("ConsumerGroup", "shop", "broken", json!({"source": 7})),
            ]),
        }
    }

    fn names<K: kube::Resource>(refs: &[ObjectRef<DeserializeGuard<K>>]) -> Vec<&str> {
        refs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_broker_reconciles_everything_on_it_in_its_namespace() {
        let d = of_broker(&stores(), "shop", "main");
        assert_eq!(names(&d.topics), ["orders"]);
        assert_eq!(names(&d.queues), ["emails", "jobs"]);
        assert_eq!(names(&d.dlqs), ["failed"]);
        assert_eq!(names(&d.groups), ["billing", "mailers"]);
        assert_eq!(d.len(), 6);
        let side = of_broker(&stores(), "shop", "side");
        assert_eq!(names(&side.topics), ["audit"]);
        assert_eq!(names(&side.groups), ["auditors"]);
        assert!(of_broker(&stores(), "nowhere", "main").is_empty());
    }

    #[test]
    fn a_topic_reconciles_the_queues_it_feeds_and_its_readers() {
        let d = of_topic(&stores(), "shop", "orders");
        assert_eq!(names(&d.queues), ["emails"]);
        assert_eq!(names(&d.groups), ["billing"]);
        assert!(d.topics.is_empty() && d.dlqs.is_empty());
        // Same name in another namespace: not the same topic.
        assert!(of_topic(&stores(), "other", "orders").is_empty());
    }

    #[test]
    fn a_queue_or_dlq_reconciles_the_groups_that_use_it() {
        assert_eq!(
            names(&of_queue(&stores(), "shop", "emails").groups),
            ["mailers"]
        );
        // A queue created after the group that reads it.
        assert_eq!(
            names(&of_queue(&stores(), "shop", "later").groups),
            ["early"]
        );
        assert_eq!(
            names(&of_dlq(&stores(), "shop", "failed").groups),
            ["billing"]
        );
        assert!(of_dlq(&stores(), "shop", "other").is_empty());
    }
}
