//! Labels and object metadata shared by every object of a broker cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::BrokerCluster;

/// Labels that select the cluster's pods. They never change for a given Broker (a
/// StatefulSet's selector is immutable), so they carry neither the version nor user labels.
pub fn selector_labels(cluster: &BrokerCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "nats".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.name().to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "broker".to_string(),
        ),
    ])
}

/// Labels of every object and pod: the user's labels, then the selector labels and the
/// recommended `app.kubernetes.io/*` set (which win over user labels of the same key).
pub fn standard_labels(cluster: &BrokerCluster) -> BTreeMap<String, String> {
    let mut labels = cluster.params().labels.clone();
    labels.extend(selector_labels(cluster));
    labels.insert(
        "app.kubernetes.io/version".to_string(),
        cluster.params().version.clone(),
    );
    labels.insert(
        "app.kubernetes.io/part-of".to_string(),
        "sluice".to_string(),
    );
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "sluice-operator".to_string(),
    );
    labels
}

/// Metadata of a built object named `name`: namespace, labels and the owner reference.
pub(super) fn object_meta(cluster: &BrokerCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace().to_string()),
        labels: Some(standard_labels(cluster)),
        owner_references: cluster.params().owner_reference.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::super::{BrokerClusterParams, test_support};
    use super::*;

    #[test]
    fn user_labels_never_override_selector_labels() {
        let mut p = BrokerClusterParams::new("ns", "b", 3);
        p.labels
            .insert("app.kubernetes.io/instance".into(), "evil".into());
        p.labels.insert("team".into(), "payments".into());
        let c = BrokerCluster::new(p).unwrap();
        let labels = standard_labels(&c);
        assert_eq!(labels["app.kubernetes.io/instance"], "b");
        assert_eq!(labels["team"], "payments");
        assert_eq!(labels["app.kubernetes.io/version"], "2.15.1");
        assert!(!selector_labels(&c).contains_key("team"));
    }

    #[test]
    fn meta_carries_owner_reference() {
        assert!(
            object_meta(&test_support::cluster(1), "x".into())
                .owner_references
                .is_none()
        );
        let mut p = BrokerClusterParams::new("ns", "b", 1);
        p.owner_reference = Some(OwnerReference {
            api_version: "sluice.dev/v1alpha1".into(),
            kind: "Broker".into(),
            name: "b".into(),
            uid: "1234".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        });
        let meta = object_meta(&BrokerCluster::new(p).unwrap(), "x".into());
        let owners = meta.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Broker");
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
    }
}
