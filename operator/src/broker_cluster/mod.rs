//! Pure builders for the Kubernetes objects of a NATS JetStream cluster (a Sluice `Broker`).
//!
//! Nothing here talks to the API server: every builder takes a validated [`BrokerCluster`]
//! and returns a k8s-openapi object that the reconciler applies with server-side apply.
//!
//! ```text
//! BrokerClusterParams --BrokerCluster::new (validate)--> BrokerCluster
//!   -> config::config_map          ConfigMap   <name>-config       (nats.conf)
//!   -> service::headless_service   Service     <name>-headless     (routes, stable DNS)
//!   -> service::client_service     Service     <name>-client       (clients, port 4222)
//!   -> statefulset::stateful_set   StatefulSet <name>              (pods <name>-<i>, PVCs)
//!   -> statefulset::pod_disruption_budget  PDB <name>              (maxUnavailable: 1)
//!   -> credentials::credentials_secret     Secret <name>-credentials (built once, never regenerated)
//!   -> users::users_secret                 Secret <name>-users       (users.conf: groups, producers)
//!   -> network_policy::network_policy     NetworkPolicy <name>        (who may connect; opt-in)
//!   -> tls::plan                            Secrets <name>-ca, <name>-tls (generated TLS, rotated)
//!   -> tls::certificate                     Certificate <name>-tls (cert-manager TLS)
//! ```
//!
//! # Durability: what `sync_interval` trades
//!
//! JetStream acknowledges a publish once a majority of the stream's replicas have *written*
//! it, not once they have *fsynced* it. With [`SyncPolicy::Default`] (nats-server flushes
//! every 2 minutes) or [`SyncPolicy::Interval`], an acknowledged message sits in the
//! operating system's page cache of every replica until the next flush. That is safe
//! against any process crash and against losing a minority of machines, but **if all
//! replicas lose power together** (a whole zone or rack going dark) acknowledged writes of
//! the last interval can be lost, and a single-replica broker loses them when its node
//! dies. [`SyncPolicy::Always`] (`sync_interval: always`) fsyncs every write before the
//! acknowledgement, closing that window at a large cost in publish latency and
//! throughput. Choose `Always` when acknowledged data must survive a correlated power
//! loss; keep the default when replicas are spread over failure domains.
//!
//! # Upgrades and scale-down
//!
//! Pods are started in parallel (`podManagementPolicy: Parallel`, needed so a fresh cluster
//! can form its Raft quorum) but rolled one at a time: the startup probe is the full
//! `/healthz`, which only passes once this server's JetStream assets have caught up, and a pod
//! is not Ready before it has started, so the next pod is not restarted before the previous
//! one is current again (readiness itself is `?js-server-only=true`: see the StatefulSet
//! builder). A scale-down below the replica count of any stream is refused by
//! [`validate_scale_down`].

mod config;
mod credentials;
mod labels;
mod network_policy;
mod quantity;
mod scale;
mod service;
mod statefulset;
mod tls;
pub mod users;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sluice_broker::names::{validate_label, validate_subdomain};
use sluice_broker::{Error, ErrorKind, Result};

pub use config::{NATS_CONF_KEY, config_map, nats_conf};
pub use credentials::{
    CredentialsSecretAction, OPERATOR_PASSWORD_KEY, OPERATOR_USER_KEY, OPERATOR_USERNAME,
    PASSWORD_KEY, ROUTE_PASSWORD_KEY, ROUTE_USER_KEY, ROUTE_USERNAME, USER_KEY, WORKER_USERNAME,
    credentials_secret, existing_secret_action, generate_password, route_data, validate_password,
};
pub use labels::{selector_labels, standard_labels};
pub use network_policy::{CLIENT_LABEL, GROUP_LABEL_KEY, OperatorPeer, network_policy};
pub use quantity::parse_bytes;
pub use scale::validate_scale_down;
pub use service::{client_service, headless_service};
pub use statefulset::{pod_disruption_budget, stateful_set};
pub use tls::{
    CA_CERT_KEY, CA_KEY_KEY, CA_LIFETIME, GeneratedCa, IssuerRef, SERVER_LIFETIME,
    ServerCertificate, TLS_CERT_KEY, TLS_DIR, TLS_KEY_KEY, TlsMode, TlsWrites, ca_secret_name,
    certificate, generate_ca, issue_server_certificate, plan as plan_tls, server_names,
    tls_secret_name,
};

/// nats-server image repository used when the Broker names none.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "nats";
/// DNS domain of the cluster's Services when the operator is not told another one
/// (`--cluster-domain`, the chart's `clusterDomain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// nats-server version used when the Broker names none (the one tests run against).
pub const DEFAULT_VERSION: &str = "2.15.1";
/// Port clients (workers, the operator) connect to.
pub const CLIENT_PORT: i32 = 4222;
/// Port servers use for cluster routes.
pub const CLUSTER_PORT: i32 = 6222;
/// HTTP monitoring port (`/healthz`, `/varz`, `/jsz`).
pub const MONITOR_PORT: i32 = 8222;
/// Longest Broker name: the StatefulSet's `controller-revision-hash` label value is
/// `<name>-<10 chars>` and must fit in 63 characters.
pub const MAX_NAME_LEN: usize = 52;

/// How often JetStream fsyncs stream data to disk (see the module doc for the trade-off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// nats-server's default interval (2 minutes at the time of writing).
    #[default]
    Default,
    /// Flush every given interval.
    Interval(Duration),
    /// fsync every write before acknowledging it.
    Always,
}

/// Everything needed to build a broker cluster; the CRD adapter fills it from a `Broker`.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerClusterParams {
    /// Namespace of the Broker and of every object built for it.
    pub namespace: String,
    /// Name of the Broker; objects are named `<name>`, `<name>-config`, `<name>-headless`, ...
    pub name: String,
    /// Number of nats-server pods: 1, 3 or 5 (Raft needs an odd count).
    pub replicas: u8,
    /// Image repository, `nats` (Docker Hub's official image) unless overridden.
    pub image_repository: String,
    /// nats-server version; the image tag is `<version>-alpine`.
    pub version: String,
    /// Size of each pod's JetStream volume.
    pub storage_size: Quantity,
    /// StorageClass of the volumes; the cluster default when `None`.
    pub storage_class: Option<String>,
    /// Requests and limits of the nats-server container.
    pub resources: Option<ResourceRequirements>,
    /// JetStream memory-store limit in bytes; nats-server picks 75% of RAM when `None`.
    pub max_memory_store: Option<u64>,
    /// JetStream file-store limit in bytes; 90% of the volume when `None`.
    pub max_file_store: Option<u64>,
    /// When stream data is fsynced.
    pub sync_interval: SyncPolicy,
    /// Owner of every built object (the `Broker`), so they are garbage-collected with it.
    pub owner_reference: Option<OwnerReference>,
    /// Extra labels for every object and pod (never part of selectors).
    pub labels: BTreeMap<String, String>,
    /// A user-provided credentials Secret (same keys as [`credentials_secret`] builds) used
    /// instead of the generated `<name>-credentials`.
    pub existing_credentials_secret: Option<String>,
    /// DNS domain of the cluster (`cluster.local` unless the cluster was set up with
    /// another): the servers' route URLs and the client URL are fully qualified with it.
    pub cluster_domain: String,
    /// Who issues the servers' TLS certificates (see [`TlsMode`]); TLS is on unless
    /// [`TlsMode::Disabled`].
    pub tls: TlsMode,
}

impl BrokerClusterParams {
    /// Parameters with the defaults: image `nats`, version [`DEFAULT_VERSION`], 10Gi storage.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, replicas: u8) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            replicas,
            image_repository: DEFAULT_IMAGE_REPOSITORY.to_string(),
            version: DEFAULT_VERSION.to_string(),
            storage_size: Quantity("10Gi".to_string()),
            storage_class: None,
            resources: None,
            max_memory_store: None,
            max_file_store: None,
            sync_interval: SyncPolicy::Default,
            owner_reference: None,
            labels: BTreeMap::new(),
            existing_credentials_secret: None,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            tls: TlsMode::Generated,
        }
    }
}

/// Validated parameters of one broker cluster; the only input of the builders.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerCluster {
    params: BrokerClusterParams,
    storage_bytes: u64,
}

impl BrokerCluster {
    /// Checks `params` (names, replica count, sizes, sync interval) and returns the cluster,
    /// or an `InvalidSpec` error saying which field to fix.
    pub fn new(params: BrokerClusterParams) -> Result<Self> {
        validate_label(&params.namespace, "namespace")?;
        validate_label(&params.name, "broker name")?;
        if let Some(secret) = &params.existing_credentials_secret {
            validate_subdomain(secret, "credentials Secret name")?;
        }
        if params.name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "broker name {:?} is {} characters long; use at most {MAX_NAME_LEN} so the StatefulSet's pod labels stay valid",
                params.name,
                params.name.len()
            )));
        }
        if !matches!(params.replicas, 1 | 3 | 5) {
            return Err(invalid(format!(
                "broker {}/{} asks for {} replicas; use 1, 3 or 5 (JetStream's Raft groups need an odd count)",
                params.namespace, params.name, params.replicas
            )));
        }
        if params.version.is_empty()
            || !params
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(invalid(format!(
                "broker {}/{} has an invalid version {:?}; use a nats-server release such as {DEFAULT_VERSION}",
                params.namespace, params.name, params.version
            )));
        }
        let storage_bytes = parse_bytes(&params.storage_size.0).map_err(|e| {
            invalid(format!(
                "broker {}/{} has an invalid storage size: {}",
                params.namespace,
                params.name,
                e.message()
            ))
        })?;
        if let Some(max_file) = params.max_file_store
            && max_file > storage_bytes
        {
            return Err(invalid(format!(
                "broker {}/{}: maxFileStore ({max_file} bytes) exceeds the volume size {} ({storage_bytes} bytes); lower it or grow the storage",
                params.namespace, params.name, params.storage_size.0
            )));
        }
        if params.max_file_store == Some(0) || params.max_memory_store == Some(0) {
            return Err(invalid(format!(
                "broker {}/{}: JetStream store limits must be greater than zero",
                params.namespace, params.name
            )));
        }
        if let SyncPolicy::Interval(every) = params.sync_interval
            && every.as_millis() == 0
        {
            return Err(invalid(format!(
                "broker {}/{}: syncInterval must be at least 1ms; use `always` to fsync every write",
                params.namespace, params.name
            )));
        }
        Ok(Self {
            params,
            storage_bytes,
        })
    }

    /// The parameters this cluster was built from.
    pub fn params(&self) -> &BrokerClusterParams {
        &self.params
    }

    /// Namespace of every object.
    pub fn namespace(&self) -> &str {
        &self.params.namespace
    }

    /// Broker name (also the StatefulSet's and the PDB's name).
    pub fn name(&self) -> &str {
        &self.params.name
    }

    /// Number of servers.
    pub fn replicas(&self) -> u8 {
        self.params.replicas
    }

    /// Size of each JetStream volume in bytes.
    pub fn storage_bytes(&self) -> u64 {
        self.storage_bytes
    }

    /// The JetStream file-store limit written into nats.conf: the explicit one, or 90% of
    /// the volume so filesystem overhead never fills the disk before JetStream's own limit.
    pub fn effective_max_file_store(&self) -> u64 {
        self.params
            .max_file_store
            .unwrap_or(self.storage_bytes / 10 * 9)
    }

    /// Container image, `<repository>:<version>-alpine` (the alpine variant ships the
    /// `nats-server` binary on PATH, which the lame-duck preStop hook needs).
    pub fn image(&self) -> String {
        format!(
            "{}:{}-alpine",
            self.params.image_repository, self.params.version
        )
    }

    /// Name of the nats.conf ConfigMap.
    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.params.name)
    }

    /// Name of the headless Service that gives every pod a stable DNS name.
    pub fn headless_service_name(&self) -> String {
        format!("{}-headless", self.params.name)
    }

    /// Name of the client Service.
    pub fn client_service_name(&self) -> String {
        format!("{}-client", self.params.name)
    }

    /// Name of the Secret holding the servers' users file (`<name>-users`, see [`users`]).
    pub fn users_secret_name(&self) -> String {
        format!("{}-users", self.params.name)
    }

    /// Name of the credentials Secret the servers read: the user's existing Secret, else the
    /// generated `<name>-credentials`.
    pub fn credentials_secret_name(&self) -> String {
        self.params
            .existing_credentials_secret
            .clone()
            .unwrap_or_else(|| format!("{}-credentials", self.params.name))
    }

    /// Whether the operator generates the credentials Secret (no existing Secret was named).
    pub fn generates_credentials(&self) -> bool {
        self.params.existing_credentials_secret.is_none()
    }

    /// Stable DNS name of server `ordinal`.
    pub fn pod_dns_name(&self, ordinal: u8) -> String {
        format!(
            "{}-{ordinal}.{}.{}.svc.{}",
            self.params.name,
            self.headless_service_name(),
            self.params.namespace,
            self.params.cluster_domain
        )
    }

    /// Cluster route URL of every server (empty for a single server, which needs no routes).
    pub fn routes(&self) -> Vec<String> {
        if self.params.replicas <= 1 {
            return Vec::new();
        }
        (0..self.params.replicas)
            .map(|i| format!("nats://{}:{CLUSTER_PORT}", self.pod_dns_name(i)))
            .collect()
    }

    /// URL workers connect to (the value of `SLUICE_BROKER_URL`).
    pub fn client_url(&self) -> String {
        format!(
            "nats://{}.{}.svc.{}:{CLIENT_PORT}",
            self.client_service_name(),
            self.params.namespace,
            self.params.cluster_domain
        )
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidSpec, message)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A valid cluster `sluice/main` with `replicas` servers.
    pub(crate) fn cluster(replicas: u8) -> BrokerCluster {
        BrokerCluster::new(BrokerClusterParams::new("sluice", "main", replicas)).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_three_five_replicas_only() {
        for replicas in [1, 3, 5] {
            BrokerCluster::new(BrokerClusterParams::new("ns", "b", replicas)).unwrap();
        }
        for replicas in [0, 2, 4, 6, 7] {
            let err =
                BrokerCluster::new(BrokerClusterParams::new("ns", "b", replicas)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidSpec);
            assert!(err.message().contains("1, 3 or 5"), "{err}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in ["Main", "a_b", "", "-x", &"a".repeat(53)] {
            let err = BrokerCluster::new(BrokerClusterParams::new("ns", name, 3)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{name:?}");
        }
        BrokerCluster::new(BrokerClusterParams::new("ns", "a".repeat(52), 3)).unwrap();
        let err = BrokerCluster::new(BrokerClusterParams::new("NS", "b", 3)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    }

    #[test]
    fn rejects_bad_sizes_versions_and_intervals() {
        let mut p = BrokerClusterParams::new("ns", "b", 3);
        p.storage_size = Quantity("lots".into());
        assert_eq!(
            BrokerCluster::new(p).unwrap_err().kind(),
            ErrorKind::InvalidSpec
        );

        let mut p = BrokerClusterParams::new("ns", "b", 3);
        p.storage_size = Quantity("1Gi".into());
        p.max_file_store = Some(2 << 30);
        let err = BrokerCluster::new(p).unwrap_err();
        assert!(err.message().contains("exceeds the volume size"), "{err}");

        let mut p = BrokerClusterParams::new("ns", "b", 3);
        p.version = "2.15.1; rm -rf /".into();
        assert_eq!(
            BrokerCluster::new(p).unwrap_err().kind(),
            ErrorKind::InvalidSpec
        );

        let mut p = BrokerClusterParams::new("ns", "b", 3);
        p.sync_interval = SyncPolicy::Interval(Duration::from_micros(10));
        assert_eq!(
            BrokerCluster::new(p).unwrap_err().kind(),
            ErrorKind::InvalidSpec
        );
    }

    #[test]
    fn names_and_image() {
        let c = test_support::cluster(3);
        assert_eq!(c.image(), "nats:2.15.1-alpine");
        assert_eq!(c.config_map_name(), "main-config");
        assert_eq!(c.headless_service_name(), "main-headless");
        assert_eq!(c.client_service_name(), "main-client");
        assert_eq!(c.credentials_secret_name(), "main-credentials");
        assert_eq!(
            c.client_url(),
            "nats://main-client.sluice.svc.cluster.local:4222"
        );
        // 10Gi default volume, 90% of it for JetStream.
        assert_eq!(c.storage_bytes(), 10 << 30);
        assert_eq!(c.effective_max_file_store(), (10u64 << 30) / 10 * 9);
    }

    #[test]
    fn routes_cover_every_ordinal_by_stable_dns_name() {
        assert!(test_support::cluster(1).routes().is_empty());
        assert_eq!(
            test_support::cluster(3).routes(),
            vec![
                "nats://main-0.main-headless.sluice.svc.cluster.local:6222",
                "nats://main-1.main-headless.sluice.svc.cluster.local:6222",
                "nats://main-2.main-headless.sluice.svc.cluster.local:6222",
            ]
        );
        let five = test_support::cluster(5).routes();
        assert_eq!(five.len(), 5);
        assert_eq!(
            five[4],
            "nats://main-4.main-headless.sluice.svc.cluster.local:6222"
        );
    }

    #[test]
    fn another_cluster_domain_qualifies_routes_and_the_client_url() {
        let mut p = BrokerClusterParams::new("sluice", "main", 3);
        p.cluster_domain = "corp.example".into();
        let c = BrokerCluster::new(p).unwrap();
        assert_eq!(
            c.routes()[2],
            "nats://main-2.main-headless.sluice.svc.corp.example:6222"
        );
        assert_eq!(
            c.pod_dns_name(0),
            "main-0.main-headless.sluice.svc.corp.example"
        );
        assert_eq!(
            c.client_url(),
            "nats://main-client.sluice.svc.corp.example:4222"
        );
        let sts = serde_json::to_string(&statefulset::stateful_set(&c)).unwrap();
        assert!(
            sts.contains("main-1.main-headless.sluice.svc.corp.example"),
            "{sts}"
        );
        assert!(!sts.contains("cluster.local"), "{sts}");
    }
}
