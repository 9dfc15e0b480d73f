//! The headless Service (stable per-pod DNS names for routes) and the client Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{object_meta, selector_labels};
use super::{BrokerCluster, CLIENT_PORT, CLUSTER_PORT};

fn port(name: &str, number: i32, app_protocol: Option<&str>) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        app_protocol: app_protocol.map(str::to_string),
        ..ServicePort::default()
    }
}

/// Headless Service `<name>-headless`: gives pod `<name>-<i>` the DNS name
/// `<name>-<i>.<name>-headless.<ns>.svc.cluster.local`. Not-ready addresses are published
/// so servers can find each other's routes before any of them is ready (a fresh cluster
/// cannot become ready without its routes). The monitoring port (8222, unauthenticated) is
/// on no Service: kubelet probes and the operator reach it on the pod.
pub fn headless_service(cluster: &BrokerCluster) -> Service {
    Service {
        metadata: object_meta(cluster, cluster.headless_service_name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![
                port("client", CLIENT_PORT, None),
                port("cluster", CLUSTER_PORT, None),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Client Service `<name>-client` on port 4222: the address in `SLUICE_BROKER_URL`.
/// Only ready servers receive clients.
pub fn client_service(cluster: &BrokerCluster) -> Service {
    Service {
        metadata: object_meta(cluster, cluster.client_service_name()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(cluster)),
            ports: Some(vec![port("client", CLIENT_PORT, None)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cluster;
    use super::*;

    fn ports(svc: &Service) -> Vec<(String, i32, String)> {
        svc.spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| {
                let target = match p.target_port.as_ref().unwrap() {
                    IntOrString::String(s) => s.clone(),
                    IntOrString::Int(i) => i.to_string(),
                };
                (p.name.clone().unwrap(), p.port, target)
            })
            .collect()
    }

    #[test]
    fn headless_service_publishes_not_ready_pods_without_the_monitoring_port() {
        let svc = headless_service(&cluster(3));
        assert_eq!(svc.metadata.name.as_deref(), Some("main-headless"));
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(
            spec.selector.as_ref().unwrap(),
            &selector_labels(&cluster(3))
        );
        assert_eq!(
            ports(&svc),
            vec![
                ("client".into(), 4222, "client".into()),
                ("cluster".into(), 6222, "cluster".into()),
            ]
        );
    }

    #[test]
    fn client_service_exposes_only_the_client_port() {
        let svc = client_service(&cluster(1));
        assert_eq!(svc.metadata.name.as_deref(), Some("main-client"));
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_ne!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(ports(&svc), vec![("client".into(), 4222, "client".into())]);
    }
}
