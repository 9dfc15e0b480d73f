//! `Broker`: a NATS JetStream cluster run as a StatefulSet.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;

/// A replicated JetStream cluster that stores the Topics, Queues and DeadLetterQueues of its
/// namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Broker",
    namespaced,
    status = "BrokerStatus",
    shortname = "sbroker",
    derive = "PartialEq",
    doc = "A NATS JetStream cluster managed by Sluice.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "ReadyReplicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || self.storage == oldSelf.storage)").message("storage cannot be changed: the StatefulSet's volume claim templates are immutable; expand the PersistentVolumeClaims instead").field_path(".storage"))]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Number of broker servers: 1 (no redundancy), 3 (survives one failure) or 5 (survives two).
    /// A Broker cannot change between 1 server (a standalone JetStream server) and a cluster:
    /// nats-server does not migrate a standalone server's streams into a cluster. A cluster
    /// may grow (3 to 5: the servers roll onto the longer route list) but not shrink.
    #[x_kube(validation = Rule::new("self in [1, 3, 5]").message("replicas must be 1, 3 or 5"))]
    #[x_kube(validation = Rule::new("(self == 1) == (oldSelf == 1)").message("replicas cannot change between 1 (a standalone server) and a cluster: nats-server does not migrate the streams; create a new Broker and move the data"))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("replicas cannot decrease: taking servers out of a JetStream cluster needs each one's streams moved and the server peer-removed, which the operator does not do; create a smaller Broker and move the data"))]
    pub replicas: u32,
    /// nats-server version (the image tag), e.g. `2.15.1`. Default: the version the operator
    /// was built and tested with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,
    /// Persistent volume of each server. Cannot be changed: the StatefulSet's volume claim
    /// templates are immutable (expand a volume through its PersistentVolumeClaim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<BrokerStorage>,
    /// CPU and memory of each server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::common::non_negative_quantities)]
    pub resources: Option<ResourceRequirements>,
    /// JetStream limits of each server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamLimits>,
    /// How often stored messages are flushed to disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
    /// Client authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BrokerAuth>,
    /// TLS of client and route connections. Unset: `mode: Generated` (the operator runs a
    /// CA for this Broker and rotates the certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BrokerTls>,
}

impl BrokerSpec {
    /// A spec with `replicas` servers and every other setting left to its default.
    pub fn with_replicas(replicas: u32) -> Self {
        BrokerSpec {
            replicas,
            version: None,
            storage: None,
            resources: None,
            jetstream: None,
            durability: None,
            auth: None,
            tls: None,
        }
    }
}

/// Persistent volume settings.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStorage {
    /// Volume size of each server, e.g. `10Gi`.
    #[schemars(transform = super::common::byte_size)]
    pub size: Quantity,
    /// StorageClass of the volumes. Unset: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// JetStream resource limits per server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamLimits {
    /// Memory JetStream may use for memory-stored streams, e.g. `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::common::byte_size)]
    pub max_memory: Option<Quantity>,
    /// Disk JetStream may use for file-stored streams, e.g. `9Gi` (keep it below the volume size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::common::byte_size)]
    pub max_file: Option<Quantity>,
}

/// Durability settings. JetStream acknowledges a publish once a majority of replicas have
/// written it, but by default flushes to disk only every `2m`: a simultaneous crash of a
/// majority of servers can lose the last interval. Set `syncInterval: always` to flush on
/// every write (slower).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Durability {
    /// `always`, or a duration such as `2m` (nats-server's `sync_interval`).
    #[schemars(regex(pattern = r"^(always|([0-9]+(ms|s|m|h))+)$"))]
    pub sync_interval: String,
}

/// TLS of a broker's client (4222) and route (6222) connections.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("(has(self.mode) && self.mode == 'CertManager') == has(self.issuerRef)").message("issuerRef is required with mode CertManager and not allowed otherwise"))]
#[serde(rename_all = "camelCase")]
pub struct BrokerTls {
    /// `Generated` (default): the operator creates a CA (Secret `<broker>-ca`) and the
    /// servers' certificate (Secret `<broker>-tls`) and re-issues it before expiry.
    /// `CertManager`: cert-manager issues `<broker>-tls` from `issuerRef` (a `Certificate` is
    /// created). `Disabled`: plain TCP; passwords cross the network in clear text.
    #[serde(default)]
    pub mode: TlsModeSpec,
    /// The cert-manager Issuer or ClusterIssuer (mode `CertManager` only). Its issued Secret
    /// must carry `ca.crt` (CA and self-signed issuers do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<CertManagerIssuerRef>,
}

/// Who issues a broker's certificates.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
pub enum TlsModeSpec {
    /// The operator runs a CA per Broker.
    #[default]
    Generated,
    /// cert-manager issues the certificate.
    CertManager,
    /// No TLS.
    Disabled,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerIssuerRef {
    /// Name of the Issuer (in the Broker's namespace) or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (default) or `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Issuer|ClusterIssuer)$"))]
    pub kind: Option<String>,
    /// API group of the issuer. Default: `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Client authentication of a broker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerAuth {
    /// Secret the servers and clients take their credentials from, in the namespace of the
    /// Broker, with the keys `user` and `password` (workers), `operator-user` and
    /// `operator-password` (the operator; workers may not delete or purge streams) and
    /// `route-user` and `route-password` (the servers' cluster routes). Values must be
    /// letters and digits, passwords at least 16 characters starting with a letter.
    /// Unset: the operator generates `<broker>-credentials` once and never changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_secret: Option<String>,
}

impl Broker {
    /// Whether the broker's servers serve TLS (every mode but `Disabled`).
    pub fn tls_enabled(&self) -> bool {
        self.spec
            .tls
            .as_ref()
            .is_none_or(|t| t.mode != TlsModeSpec::Disabled)
    }

    /// Name of the Secret holding client credentials (keys `user` and `password`).
    pub fn credentials_secret(&self) -> String {
        self.spec
            .auth
            .as_ref()
            .and_then(|a| a.existing_secret.clone())
            .unwrap_or_else(|| credentials_secret_name(&kube::ResourceExt::name_any(self)))
    }
}

/// The default credentials Secret of broker `name`.
pub fn credentials_secret_name(name: &str) -> String {
    format!("{name}-credentials")
}

/// Client URL of broker `name` in `namespace`, through its client Service.
pub fn client_url(name: &str, namespace: &str) -> String {
    format!("nats://{name}-client.{namespace}.svc:4222")
}

/// Observed state of a Broker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Ready and friends.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Servers that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Server currently leading the JetStream meta group (read from a server's `/jsz`
    /// monitoring endpoint; unset when no server answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_leader: Option<String>,
    /// Servers in the JetStream meta group, as reported with the meta leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta_peers: Vec<String>,
    /// Highest replica count of any stream on the broker, the floor for scaling it down
    /// (read when a scale-down is requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_replicas: Option<u32>,
}
