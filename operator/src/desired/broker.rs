//! A `Broker` resource as the parameters of the NATS cluster builders in
//! [`crate::broker_cluster`] (pure).
//!
//! | Broker field | [`BrokerClusterParams`] field | default |
//! |---|---|---|
//! | `metadata.namespace`, `metadata.name` | `namespace`, `name` | |
//! | `spec.replicas` | `replicas` | (required: 1, 3 or 5) |
//! | `spec.version` | `version` | [`DEFAULT_VERSION`] |
//! | `spec.storage.size` | `storage_size` | `10Gi` |
//! | `spec.storage.storageClassName` | `storage_class` | the cluster's default class |
//! | `spec.resources` | `resources` | none |
//! | `spec.jetstream.maxMemory` / `maxFile` | `max_memory_store` / `max_file_store` (bytes) | nats-server's / 90% of the volume |
//! | `spec.durability.syncInterval` | `sync_interval` (`always` or a duration) | nats-server's |
//! | `spec.auth.existingSecret` | `existing_credentials_secret` | generated `<name>-credentials` |
//! | `spec.tls.mode`, `spec.tls.issuerRef` | `tls` ([`TlsMode`]) | `Generated` |
//! | the Broker itself | `owner_reference` (controller) | |

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{Resource, ResourceExt};

use crate::broker_cluster::{
    BrokerCluster, BrokerClusterParams, DEFAULT_VERSION, IssuerRef, SyncPolicy, TlsMode,
    parse_bytes,
};
use crate::crd::{Broker, BrokerTls, DurationString, InvalidField, TlsModeSpec};

/// Volume size of each server when `storage.size` is unset.
pub const DEFAULT_STORAGE_SIZE: &str = "10Gi";

/// The cluster parameters of `broker`.
pub fn cluster_params(broker: &Broker) -> Result<BrokerClusterParams, InvalidField> {
    let spec = &broker.spec;
    let replicas = u8::try_from(spec.replicas)
        .ok()
        .filter(|r| matches!(r, 1 | 3 | 5))
        .ok_or_else(|| {
            InvalidField::new(
                "replicas",
                format!("must be 1, 3 or 5, got {}", spec.replicas),
            )
        })?;
    let mut p = BrokerClusterParams::new(
        broker.namespace().unwrap_or_default(),
        broker.name_any(),
        replicas,
    );
    p.version = spec
        .version
        .clone()
        .unwrap_or_else(|| DEFAULT_VERSION.to_string());
    p.storage_size = spec
        .storage
        .as_ref()
        .map_or_else(|| Quantity(DEFAULT_STORAGE_SIZE.into()), |s| s.size.clone());
    p.storage_class = spec
        .storage
        .as_ref()
        .and_then(|s| s.storage_class_name.clone());
    p.resources = spec.resources.clone();
    if let Some(js) = &spec.jetstream {
        p.max_memory_store = js
            .max_memory
            .as_ref()
            .map(|q| bytes(q, "jetstream.maxMemory"))
            .transpose()?;
        p.max_file_store = js
            .max_file
            .as_ref()
            .map(|q| bytes(q, "jetstream.maxFile"))
            .transpose()?;
    }
    if let Some(d) = &spec.durability {
        p.sync_interval = sync_policy(&d.sync_interval)?;
    }
    p.existing_credentials_secret = spec.auth.as_ref().and_then(|a| a.existing_secret.clone());
    p.tls = tls_mode(spec.tls.as_ref())?;
    p.owner_reference = broker.controller_owner_ref(&());
    Ok(p)
}

/// The TLS mode of `spec.tls` (unset: generated).
fn tls_mode(tls: Option<&BrokerTls>) -> Result<TlsMode, InvalidField> {
    let Some(tls) = tls else {
        return Ok(TlsMode::Generated);
    };
    match (tls.mode, &tls.issuer_ref) {
        (TlsModeSpec::Generated, None) => Ok(TlsMode::Generated),
        (TlsModeSpec::Disabled, None) => Ok(TlsMode::Disabled),
        (TlsModeSpec::CertManager, Some(issuer)) => Ok(TlsMode::CertManager(IssuerRef {
            name: issuer.name.clone(),
            kind: issuer.kind.clone().unwrap_or_else(|| "Issuer".to_string()),
            group: issuer
                .group
                .clone()
                .unwrap_or_else(|| "cert-manager.io".to_string()),
        })),
        (TlsModeSpec::CertManager, None) => Err(InvalidField::new(
            "tls.issuerRef",
            "mode CertManager needs the issuer: set tls.issuerRef.name (and kind ClusterIssuer for a cluster-wide issuer)",
        )),
        (_, Some(_)) => Err(InvalidField::new(
            "tls.issuerRef",
            "only mode CertManager takes an issuer: remove tls.issuerRef or set mode CertManager",
        )),
    }
}

/// The validated cluster of `broker`: [`cluster_params`] checked by [`BrokerCluster::new`].
pub fn cluster(broker: &Broker) -> Result<BrokerCluster, InvalidField> {
    cluster_in(broker, crate::broker_cluster::DEFAULT_CLUSTER_DOMAIN)
}

/// [`cluster`] in a cluster whose DNS domain is `cluster_domain`.
pub fn cluster_in(broker: &Broker, cluster_domain: &str) -> Result<BrokerCluster, InvalidField> {
    let mut params = cluster_params(broker)?;
    params.cluster_domain = cluster_domain.to_string();
    BrokerCluster::new(params).map_err(|e| InvalidField::new("", e.message().to_string()))
}

fn bytes(q: &Quantity, field: &str) -> Result<u64, InvalidField> {
    parse_bytes(&q.0).map_err(|e| InvalidField::new(field, e.message().to_string()))
}

fn sync_policy(text: &str) -> Result<SyncPolicy, InvalidField> {
    if text == "always" {
        return Ok(SyncPolicy::Always);
    }
    DurationString(text.to_string())
        .parse("durability.syncInterval")
        .map(SyncPolicy::Interval)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ResourceRequirements;

    use super::*;

    fn broker(yaml: &str) -> Broker {
        let mut b: Broker = serde_yaml::from_str(yaml).unwrap();
        b.metadata.uid = Some("uid-1".into());
        b
    }

    const MINIMAL: &str = "apiVersion: sluice.dev/v1alpha1\nkind: Broker\nmetadata: {name: main, namespace: prod}\nspec: {replicas: 3}\n";

    #[test]
    fn minimal_broker_gets_the_defaults() {
        let p = cluster_params(&broker(MINIMAL)).unwrap();
        let mut expected = BrokerClusterParams::new("prod", "main", 3);
        expected.owner_reference = p.owner_reference.clone();
        assert_eq!(p, expected);
        let owner = p.owner_reference.unwrap();
        assert_eq!(owner.kind, "Broker");
        assert_eq!(owner.api_version, "sluice.dev/v1alpha1");
        assert_eq!(owner.name, "main");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn every_field_maps() {
        let b = broker(
            r#"
apiVersion: sluice.dev/v1alpha1
kind: Broker
metadata: {name: events, namespace: team-a}
spec:
  replicas: 5
  version: "2.15.0"
  storage: {size: 20Gi, storageClassName: fast}
  resources: {requests: {cpu: 500m, memory: 1Gi}}
  jetstream: {maxMemory: 512Mi, maxFile: 18Gi}
  durability: {syncInterval: 30s}
  auth: {existingSecret: my-creds}
"#,
        );
        let p = cluster_params(&b).unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str()),
            ("team-a", "events")
        );
        assert_eq!(p.replicas, 5);
        assert_eq!(p.version, "2.15.0");
        assert_eq!(p.storage_size, Quantity("20Gi".into()));
        assert_eq!(p.storage_class.as_deref(), Some("fast"));
        let requests = p
            .resources
            .as_ref()
            .and_then(|r: &ResourceRequirements| r.requests.clone())
            .unwrap();
        assert_eq!(requests["cpu"], Quantity("500m".into()));
        assert_eq!(p.max_memory_store, Some(512 << 20));
        assert_eq!(p.max_file_store, Some(18 << 30));
        assert_eq!(
            p.sync_interval,
            SyncPolicy::Interval(Duration::from_secs(30))
        );
        assert_eq!(p.existing_credentials_secret.as_deref(), Some("my-creds"));
        let c = cluster(&b).unwrap();
        assert_eq!(c.credentials_secret_name(), "my-creds");
        assert!(!c.generates_credentials());
        assert_eq!(c.image(), "nats:2.15.0-alpine");
    }

    #[test]
    fn sync_always_and_generated_secret() {
        let b = broker(&MINIMAL.replace(
            "{replicas: 3}",
            "{replicas: 1, durability: {syncInterval: always}}",
        ));
        let c = cluster(&b).unwrap();
        assert_eq!(c.params().sync_interval, SyncPolicy::Always);
        assert_eq!(c.credentials_secret_name(), "main-credentials");
        assert_eq!(c.credentials_secret_name(), b.credentials_secret());
        assert!(c.generates_credentials());
    }

    #[test]
    fn invalid_specs_name_the_field() {
        for (spec, field) in [
            ("{replicas: 2}", "replicas"),
            ("{replicas: 300}", "replicas"),
            (
                "{replicas: 3, jetstream: {maxMemory: 1.5Gi}}",
                "jetstream.maxMemory",
            ),
            (
                "{replicas: 3, durability: {syncInterval: sometimes}}",
                "durability.syncInterval",
            ),
        ] {
            let err = cluster(&broker(&MINIMAL.replace("{replicas: 3}", spec))).unwrap_err();
            assert_eq!(err.field, field, "{spec}: {err}");
        }
        // Checked by the cluster builder: a file store larger than the volume.
        let err = cluster(&broker(&MINIMAL.replace(
            "{replicas: 3}",
            "{replicas: 3, storage: {size: 1Gi}, jetstream: {maxFile: 2Gi}}",
        )))
        .unwrap_err();
        assert!(err.message.contains("exceeds the volume size"), "{err}");
        let err = cluster(&broker(&MINIMAL.replace(
            "{replicas: 3}",
            "{replicas: 3, auth: {existingSecret: Bad_Name}}",
        )))
        .unwrap_err();
        assert!(err.message.contains("credentials Secret name"), "{err}");
    }
}
