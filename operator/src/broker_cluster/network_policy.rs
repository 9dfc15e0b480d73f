//! The NetworkPolicy `<name>` of a broker cluster (when the operator is told where it runs,
//! see [`OperatorPeer`]): who may open connections to the servers.
//!
//! | port | from |
//! |---|---|
//! | 4222 (clients) | worker pods of the Broker's namespace (label [`GROUP_LABEL_KEY`], set by the operator), pods there labelled [`CLIENT_LABEL`]`=true` (producers, the examples' Jobs, any application), the operator |
//! | 6222 (routes) | the Broker's own servers |
//! | 8222 (monitoring) | the operator (it reads `/jsz`); kubelet probes are not subject to NetworkPolicy |
//!
//! Everything else, from any other namespace or pod, is dropped by a CNI that enforces
//! NetworkPolicy.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{object_meta, selector_labels};
use super::{BrokerCluster, CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT};

/// Label the operator puts on worker pods (the group's name); its presence admits a pod.
pub const GROUP_LABEL_KEY: &str = "sluice.dev/group";
/// Label an application pod carries (`"true"`) to be admitted to its namespace's brokers.
pub const CLIENT_LABEL: &str = "sluice.dev/broker-client";

/// Where the operator's pods run: the only peer from another namespace the policy admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPeer {
    /// Namespace of the operator's pods.
    pub namespace: String,
    /// Labels selecting the operator's pods there.
    pub pod_labels: BTreeMap<String, String>,
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..NetworkPolicyPort::default()
    }
}

fn pods(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector),
        ..NetworkPolicyPeer::default()
    }
}

fn operator(peer: &OperatorPeer) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                peer.namespace.clone(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(peer.pod_labels.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The NetworkPolicy `<name>` selecting the broker's servers (see the module doc).
pub fn network_policy(cluster: &BrokerCluster, peer: &OperatorPeer) -> NetworkPolicy {
    let workers = pods(LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: GROUP_LABEL_KEY.to_string(),
            operator: "Exists".to_string(),
            values: None,
        }]),
        ..LabelSelector::default()
    });
    let clients = pods(LabelSelector {
        match_labels: Some(BTreeMap::from([(
            CLIENT_LABEL.to_string(),
            "true".to_string(),
        )])),
        ..LabelSelector::default()
    });
    let servers = pods(LabelSelector {
        match_labels: Some(selector_labels(cluster)),
        ..LabelSelector::default()
    });
    NetworkPolicy {
        metadata: object_meta(cluster, cluster.name().to_string()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![tcp(CLIENT_PORT)]),
                    from: Some(vec![workers, clients, operator(peer)]),
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![tcp(CLUSTER_PORT)]),
                    from: Some(vec![servers]),
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![tcp(MONITOR_PORT)]),
                    from: Some(vec![operator(peer)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cluster;
    use super::*;

    fn peer() -> OperatorPeer {
        OperatorPeer {
            namespace: "sluice-system".into(),
            pod_labels: BTreeMap::from([(
                "app.kubernetes.io/component".to_string(),
                "operator".to_string(),
            )]),
        }
    }

    /// (port, peers as "namespace-selector | pod-selector" strings) of every rule.
    fn rules(np: &NetworkPolicy) -> Vec<(i32, Vec<String>)> {
        np.spec
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| {
                let ports = r.ports.as_ref().unwrap();
                assert_eq!(ports.len(), 1);
                let IntOrString::Int(port) = ports[0].port.clone().unwrap() else {
                    panic!("named port")
                };
                let peers = r
                    .from
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        format!(
                            "{} | {}",
                            serde_json::to_string(&p.namespace_selector).unwrap(),
                            serde_json::to_string(&p.pod_selector).unwrap()
                        )
                    })
                    .collect();
                (port, peers)
            })
            .collect()
    }

    #[test]
    fn clients_from_workers_labelled_apps_and_the_operator_routes_from_servers_only() {
        let c = cluster(3);
        let np = network_policy(&c, &peer());
        assert_eq!(np.metadata.name.as_deref(), Some("main"));
        assert_eq!(np.metadata.namespace.as_deref(), Some("sluice"));
        let spec = np.spec.as_ref().unwrap();
        assert_eq!(
            spec.pod_selector.as_ref().unwrap().match_labels.as_ref(),
            Some(&selector_labels(&c))
        );
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string()][..])
        );
        let operator = r#"{"matchLabels":{"kubernetes.io/metadata.name":"sluice-system"}} | {"matchLabels":{"app.kubernetes.io/component":"operator"}}"#;
        let servers = format!(
            "null | {}",
            serde_json::to_string(&Some(LabelSelector {
                match_labels: Some(selector_labels(&c)),
                ..LabelSelector::default()
            }))
            .unwrap()
        );
        assert_eq!(
            rules(&np),
            vec![
                (
                    4222,
                    vec![
                        r#"null | {"matchExpressions":[{"key":"sluice.dev/group","operator":"Exists"}]}"#.to_string(),
                        r#"null | {"matchLabels":{"sluice.dev/broker-client":"true"}}"#.to_string(),
                        operator.to_string(),
                    ]
                ),
                (6222, vec![servers]),
                (8222, vec![operator.to_string()]),
            ]
        );
        // Pod selectors without a namespace selector only match the policy's own namespace:
        // workers and clients of other namespaces are not admitted.
    }

    #[test]
    fn the_group_label_is_the_one_on_worker_pods() {
        assert_eq!(GROUP_LABEL_KEY, crate::desired::worker::GROUP_LABEL);
    }
}
