//! TLS of a broker cluster: its CA, its server certificate and the nats.conf `tls` blocks.
//!
//! | mode | who issues | Secrets / objects |
//! |---|---|---|
//! | `Generated` (default) | the operator (rcgen, ECDSA P-256) | `<name>-ca` (`ca.crt`, `ca.key`; read by the operator only), `<name>-tls` (`ca.crt`, `tls.crt`, `tls.key`; mounted by the servers) |
//! | `CertManager` | cert-manager, from the `issuerRef` the Broker names | a `Certificate` `<name>-tls` writing the Secret `<name>-tls` (same keys) |
//! | `Disabled` | nobody | plain TCP (not recommended: passwords cross the network in clear text) |
//!
//! Lifetimes and rotation (`Generated`): the server certificate lives [`SERVER_LIFETIME`]
//! and is re-issued once less than a third of it remains (or when its names, or the CA,
//! changed); the CA lives [`CA_LIFETIME`] and is replaced once less than a third remains,
//! the old CA staying in the `ca.crt` bundle until it expires so clients holding the old
//! bundle keep verifying servers until they restart. The servers pick a new certificate up
//! through a rolling restart: the pod template carries a hash of the `<name>-tls` Secret.
//!
//! Names in the server certificate ([`server_names`]): the client Service in every form a
//! client may use (`<name>-client`, `.<ns>`, `.<ns>.svc`, `.<ns>.svc.<domain>`), every
//! server's stable name (`*.<name>-headless.<ns>.svc.<domain>`, which routes verify), and
//! `localhost` / `127.0.0.1` (port-forwards). The certificate carries both the server and
//! the client usage: routes are mutually verified TLS.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde_json::{Value, json};
use sluice_broker::{Error, ErrorKind, Result};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::BrokerCluster;
use super::labels::object_meta;

/// Key of the CA certificate(s) (PEM bundle) in both Secrets.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the CA's private key in `<name>-ca`.
pub const CA_KEY_KEY: &str = "ca.key";
/// Key of the server certificate in `<name>-tls`.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Key of the server's private key in `<name>-tls`.
pub const TLS_KEY_KEY: &str = "tls.key";
/// Directory the servers mount `<name>-tls` at.
pub const TLS_DIR: &str = "/etc/nats-tls";
/// Annotation of a generated Secret: when its certificate expires (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "sluice.dev/tls-not-after";
/// Annotation of the generated `<name>-tls`: the names its certificate was issued for.
pub const NAMES_ANNOTATION: &str = "sluice.dev/tls-names";
/// Annotation of the generated `<name>-ca`: when the CA before this one expires (its
/// certificate stays in the bundle until then).
pub const PREVIOUS_CA_NOT_AFTER_ANNOTATION: &str = "sluice.dev/tls-previous-ca-not-after";
/// Lifetime of a generated CA.
pub const CA_LIFETIME: Duration = Duration::days(3650);
/// Lifetime of a generated server certificate.
pub const SERVER_LIFETIME: Duration = Duration::days(90);
/// Backdating of `notBefore`, for clocks a little behind the operator's.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Who issues a broker's certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// The operator generates a CA and the server certificate, and rotates them.
    #[default]
    Generated,
    /// cert-manager issues the server certificate from this issuer.
    CertManager(IssuerRef),
    /// No TLS (plain TCP).
    Disabled,
}

impl TlsMode {
    /// Whether the servers serve TLS.
    pub fn enabled(&self) -> bool {
        !matches!(self, TlsMode::Disabled)
    }
}

/// A cert-manager issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRef {
    /// Name of the Issuer or ClusterIssuer.
    pub name: String,
    /// `Issuer` (same namespace) or `ClusterIssuer`.
    pub kind: String,
    /// API group of the issuer (`cert-manager.io` for the built-in ones).
    pub group: String,
}

/// Name of the Secret holding the servers' certificate, key and the CA (`<name>-tls`).
pub fn tls_secret_name(broker: &str) -> String {
    format!("{broker}-tls")
}

/// Name of the Secret holding the generated CA and its key (`<name>-ca`).
pub fn ca_secret_name(broker: &str) -> String {
    format!("{broker}-ca")
}

/// The DNS names and IP addresses the server certificate must carry (see the module doc).
pub fn server_names(cluster: &BrokerCluster) -> Vec<String> {
    let ns = cluster.namespace();
    let domain = &cluster.params().cluster_domain;
    let client = cluster.client_service_name();
    let headless = cluster.headless_service_name();
    vec![
        client.clone(),
        format!("{client}.{ns}"),
        format!("{client}.{ns}.svc"),
        format!("{client}.{ns}.svc.{domain}"),
        format!("*.{headless}.{ns}.svc.{domain}"),
        format!("*.{headless}.{ns}.svc"),
        format!("{headless}.{ns}.svc.{domain}"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]
}

/// The `tls { }` block for the client port, or `None` when TLS is disabled.
pub fn client_tls_conf(cluster: &BrokerCluster) -> Option<String> {
    cluster.params().tls.enabled().then(|| tls_block("", false))
}

/// The `tls { }` block inside `cluster { }` (routes verify each other's certificates), or
/// `None` when TLS is disabled.
pub fn route_tls_conf(cluster: &BrokerCluster) -> Option<String> {
    cluster
        .params()
        .tls
        .enabled()
        .then(|| tls_block("  ", true))
}

fn tls_block(indent: &str, verify: bool) -> String {
    let mut b = format!("{indent}tls {{\n");
    b.push_str(&format!(
        "{indent}  cert_file: \"{TLS_DIR}/{TLS_CERT_KEY}\"\n"
    ));
    b.push_str(&format!(
        "{indent}  key_file: \"{TLS_DIR}/{TLS_KEY_KEY}\"\n"
    ));
    b.push_str(&format!("{indent}  ca_file: \"{TLS_DIR}/{CA_CERT_KEY}\"\n"));
    b.push_str(&format!("{indent}  timeout: 5\n"));
    if verify {
        b.push_str(&format!("{indent}  verify: true\n"));
    }
    b.push_str(&format!("{indent}}}\n"));
    b
}

/// A CA the operator generated: its certificate, its key and the bundle clients trust.
#[derive(Clone)]
pub struct GeneratedCa {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    /// The CA's private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The CA certificates clients trust: this one, then the previous CA while it is valid.
    pub bundle_pem: String,
    /// Expiry of this CA.
    pub not_after: OffsetDateTime,
    /// Expiry of the previous CA kept in the bundle, if any.
    pub previous_not_after: Option<OffsetDateTime>,
}

impl std::fmt::Debug for GeneratedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCa")
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A server certificate and its key.
#[derive(Clone)]
pub struct ServerCertificate {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// Expiry.
    pub not_after: OffsetDateTime,
    /// The names it was issued for.
    pub names: Vec<String>,
}

impl std::fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("not_after", &self.not_after)
            .field("names", &self.names)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn tls_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(
        ErrorKind::InvalidSpec,
        format!(
            "failed to {what}; delete the broker's <name>-ca and <name>-tls Secrets to start over"
        ),
        e,
    )
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// The CA's parameters: the same for a broker every time, so a stored CA key plus these
/// parameters sign certificates that chain to the stored CA certificate.
fn ca_params(cluster: &BrokerCluster, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sluice");
    dn.push(
        DnType::CommonName,
        format!(
            "sluice broker CA {}/{}",
            cluster.namespace(),
            cluster.name()
        ),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_LIFETIME;
    params
}

/// Generates a fresh CA; `previous` (a CA being replaced) stays in the bundle while valid.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when key generation or signing fails.
pub fn generate_ca(
    cluster: &BrokerCluster,
    now: OffsetDateTime,
    previous: Option<&GeneratedCa>,
) -> Result<GeneratedCa> {
    let key = KeyPair::generate().map_err(|e| tls_error("generate the CA key", e))?;
    let mut params = ca_params(cluster, now);
    params.serial_number = Some(serial());
    let cert = params
        .self_signed(&key)
        .map_err(|e| tls_error("sign the CA certificate", e))?;
    let cert_pem = cert.pem();
    let (bundle_pem, previous_not_after) = match previous.filter(|p| p.not_after > now) {
        Some(p) => (format!("{cert_pem}{}", p.cert_pem), Some(p.not_after)),
        None => (cert_pem.clone(), None),
    };
    Ok(GeneratedCa {
        cert_pem,
        key_pem: key.serialize_pem(),
        bundle_pem,
        not_after: params.not_after,
        previous_not_after,
    })
}

/// Issues the server certificate for `names`, signed by `ca`.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when a name is not a valid DNS name or IP address, or the CA
/// key cannot be read.
pub fn issue_server_certificate(
    cluster: &BrokerCluster,
    ca: &GeneratedCa,
    names: &[String],
    now: OffsetDateTime,
) -> Result<ServerCertificate> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| tls_error("read the CA key", e))?;
    let issuer = Issuer::new(ca_params(cluster, now), ca_key);
    let key = KeyPair::generate().map_err(|e| tls_error("generate the server key", e))?;
    let mut params =
        CertificateParams::new(names.to_vec()).map_err(|e| tls_error("use the server names", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sluice");
    dn.push(DnType::CommonName, cluster.client_service_name());
    params.distinguished_name = dn;
    params.serial_number = Some(serial());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = (now + SERVER_LIFETIME).min(ca.not_after);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_error("sign the server certificate", e))?;
    Ok(ServerCertificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: params.not_after,
        names: names.to_vec(),
    })
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|s| !s.is_empty())
}

fn annotation_time(secret: &Secret, key: &str) -> Option<OffsetDateTime> {
    let value = secret.metadata.annotations.as_ref()?.get(key)?;
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The CA stored in `<name>-ca`; `None` when absent or incomplete.
pub fn stored_ca(secret: Option<&Secret>) -> Option<GeneratedCa> {
    let secret = secret?;
    let bundle_pem = data(secret, CA_CERT_KEY)?;
    let key_pem = data(secret, CA_KEY_KEY)?;
    let not_after = annotation_time(secret, NOT_AFTER_ANNOTATION)?;
    // The bundle starts with the current CA.
    let end = "-----END CERTIFICATE-----";
    let cert_pem = bundle_pem
        .find(end)
        .map(|i| format!("{}\n", &bundle_pem[..i + end.len()]))?;
    Some(GeneratedCa {
        cert_pem,
        key_pem,
        bundle_pem,
        not_after,
        previous_not_after: annotation_time(secret, PREVIOUS_CA_NOT_AFTER_ANNOTATION),
    })
}

/// Whether a certificate issued for `lifetime` and expiring at `not_after` is due for
/// renewal at `now`: less than a third of its lifetime remains.
pub fn due(not_after: OffsetDateTime, lifetime: Duration, now: OffsetDateTime) -> bool {
    not_after - now < lifetime / 3
}

/// The Secrets a reconcile must write for a `Generated` broker (each `None` when the stored
/// one is still good). Its `Debug` output names the Secrets and never shows their keys.
#[derive(Default)]
pub struct TlsWrites {
    /// A new `<name>-ca`.
    pub ca_secret: Option<Secret>,
    /// A new `<name>-tls`.
    pub tls_secret: Option<Secret>,
}

impl std::fmt::Debug for TlsWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |s: &Option<Secret>| s.as_ref().map(|s| s.metadata.name.clone());
        f.debug_struct("TlsWrites")
            .field("ca_secret", &name(&self.ca_secret))
            .field("tls_secret", &name(&self.tls_secret))
            .finish()
    }
}

/// Decides what to (re-)issue at `now` from the stored `<name>-ca` and `<name>-tls` and
/// builds the Secrets to write:
/// - no usable CA, or the CA is due: a new CA (the old one stays in the bundle while valid);
/// - a new CA, no server certificate, a server certificate that is due, issued for other
///   names or carrying another CA bundle: a new server certificate.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when generating or signing fails.
pub fn plan(
    cluster: &BrokerCluster,
    now: OffsetDateTime,
    ca_secret: Option<&Secret>,
    tls_secret: Option<&Secret>,
) -> Result<TlsWrites> {
    let mut writes = TlsWrites::default();
    let stored = stored_ca(ca_secret);
    let ca = match stored {
        Some(ca) if !due(ca.not_after, CA_LIFETIME, now) => ca,
        previous => {
            let ca = generate_ca(cluster, now, previous.as_ref())?;
            writes.ca_secret = Some(ca_secret_object(cluster, &ca));
            ca
        }
    };
    let names = server_names(cluster);
    let server_ok = tls_secret.is_some_and(|s| {
        data(s, TLS_CERT_KEY).is_some()
            && data(s, TLS_KEY_KEY).is_some()
            && data(s, CA_CERT_KEY).as_deref() == Some(ca.bundle_pem.as_str())
            && s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(NAMES_ANNOTATION))
                == Some(&names.join(","))
            && annotation_time(s, NOT_AFTER_ANNOTATION)
                .is_some_and(|t| !due(t, SERVER_LIFETIME, now))
    });
    if writes.ca_secret.is_some() || !server_ok {
        let server = issue_server_certificate(cluster, &ca, &names, now)?;
        writes.tls_secret = Some(tls_secret_object(cluster, &ca, &server));
    }
    Ok(writes)
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

/// The Secret `<name>-ca` holding `ca`.
pub fn ca_secret_object(cluster: &BrokerCluster, ca: &GeneratedCa) -> Secret {
    let mut metadata = object_meta(cluster, ca_secret_name(cluster.name()));
    let mut annotations =
        BTreeMap::from([(NOT_AFTER_ANNOTATION.to_string(), rfc3339(ca.not_after))]);
    if let Some(prev) = ca.previous_not_after {
        annotations.insert(PREVIOUS_CA_NOT_AFTER_ANNOTATION.to_string(), rfc3339(prev));
    }
    metadata.annotations = Some(annotations);
    Secret {
        metadata,
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (CA_CERT_KEY.to_string(), bytes(&ca.bundle_pem)),
            (CA_KEY_KEY.to_string(), bytes(&ca.key_pem)),
        ])),
        ..Secret::default()
    }
}

/// The Secret `<name>-tls` the servers mount: the CA bundle, the certificate and its key.
pub fn tls_secret_object(
    cluster: &BrokerCluster,
    ca: &GeneratedCa,
    server: &ServerCertificate,
) -> Secret {
    let mut metadata = object_meta(cluster, tls_secret_name(cluster.name()));
    metadata.annotations = Some(BTreeMap::from([
        (NOT_AFTER_ANNOTATION.to_string(), rfc3339(server.not_after)),
        (NAMES_ANNOTATION.to_string(), server.names.join(",")),
    ]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (CA_CERT_KEY.to_string(), bytes(&ca.bundle_pem)),
            (TLS_CERT_KEY.to_string(), bytes(&server.cert_pem)),
            (TLS_KEY_KEY.to_string(), bytes(&server.key_pem)),
        ])),
        ..Secret::default()
    }
}

/// The cert-manager `Certificate` `<name>-tls` (as JSON) writing the Secret `<name>-tls`
/// for `issuer`: the names of [`server_names`], server and client usage, 90 days renewed
/// 30 days before expiry, a new key on every renewal.
pub fn certificate(cluster: &BrokerCluster, issuer: &IssuerRef) -> Value {
    let meta = object_meta(cluster, tls_secret_name(cluster.name()));
    let names = server_names(cluster);
    let (ips, dns): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta,
        "spec": {
            "secretName": tls_secret_name(cluster.name()),
            "commonName": cluster.client_service_name(),
            "dnsNames": dns,
            "ipAddresses": ips,
            "duration": "2160h",
            "renewBefore": "720h",
            "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cluster;
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn stored(writes: &TlsWrites) -> (Secret, Secret) {
        (
            writes.ca_secret.clone().unwrap(),
            writes.tls_secret.clone().unwrap(),
        )
    }

    #[test]
    fn names_cover_the_client_service_every_server_and_localhost() {
        let names = server_names(&cluster(3));
        for n in [
            "main-client",
            "main-client.sluice",
            "main-client.sluice.svc",
            "main-client.sluice.svc.cluster.local",
            "*.main-headless.sluice.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        }
    }

    #[test]
    fn a_fresh_broker_gets_a_ca_and_a_server_certificate_then_nothing_more() {
        let c = cluster(3);
        let first = plan(&c, now(), None, None).unwrap();
        let shown = format!("{first:?}");
        assert!(
            shown.contains("main-ca") && !shown.contains("PRIVATE KEY") && !shown.contains("key"),
            "{shown}"
        );
        let (ca, tls) = stored(&first);
        assert_eq!(ca.metadata.name.as_deref(), Some("main-ca"));
        assert_eq!(tls.metadata.name.as_deref(), Some("main-tls"));
        assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
        let tls_keys: Vec<_> = tls.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(tls_keys, ["ca.crt", "tls.crt", "tls.key"]);
        assert!(
            !tls.data.as_ref().unwrap().contains_key(CA_KEY_KEY),
            "the servers must not hold the CA key"
        );
        assert_eq!(
            ca.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "sluice-operator"
        );
        // The server certificate chains to the CA (checked with rustls' verifier in
        // operator/tests/broker_tls.rs); both PEMs parse as certificates here.
        let ca_pem = data(&ca, CA_CERT_KEY).unwrap();
        sluice_broker::tls::TrustedCa::from_pem(ca_pem.as_bytes()).unwrap();

        let again = plan(&c, now() + Duration::days(30), Some(&ca), Some(&tls)).unwrap();
        assert!(
            again.ca_secret.is_none() && again.tls_secret.is_none(),
            "{again:?}"
        );
    }

    #[test]
    fn the_server_certificate_is_renewed_when_a_third_of_its_life_remains() {
        let c = cluster(3);
        let (ca, tls) = stored(&plan(&c, now(), None, None).unwrap());
        let before = plan(&c, now() + Duration::days(59), Some(&ca), Some(&tls)).unwrap();
        assert!(before.tls_secret.is_none());
        let after = plan(&c, now() + Duration::days(61), Some(&ca), Some(&tls)).unwrap();
        assert!(after.ca_secret.is_none(), "the CA is not due");
        let renewed = after.tls_secret.unwrap();
        assert_ne!(data(&renewed, TLS_CERT_KEY), data(&tls, TLS_CERT_KEY));
        assert_eq!(data(&renewed, CA_CERT_KEY), data(&tls, CA_CERT_KEY));
    }

    #[test]
    fn other_names_a_replaced_ca_or_a_missing_key_reissue_the_server_certificate() {
        let c = cluster(3);
        let (ca, tls) = stored(&plan(&c, now(), None, None).unwrap());
        let mut other_domain = c.params().clone();
        other_domain.cluster_domain = "corp.example".into();
        let moved = BrokerCluster::new(other_domain).unwrap();
        assert!(
            plan(&moved, now(), Some(&ca), Some(&tls))
                .unwrap()
                .tls_secret
                .is_some()
        );
        // CA Secret deleted: a new CA and a new server certificate.
        let fresh = plan(&c, now(), None, Some(&tls)).unwrap();
        assert!(fresh.ca_secret.is_some() && fresh.tls_secret.is_some());
        let mut no_key = tls.clone();
        no_key.data.as_mut().unwrap().remove(TLS_KEY_KEY);
        assert!(
            plan(&c, now(), Some(&ca), Some(&no_key))
                .unwrap()
                .tls_secret
                .is_some()
        );
    }

    #[test]
    fn a_due_ca_is_replaced_and_the_old_one_stays_in_the_bundle() {
        let c = cluster(1);
        let (ca, tls) = stored(&plan(&c, now(), None, None).unwrap());
        let later = now() + Duration::days(2500);
        let rotated = plan(&c, later, Some(&ca), Some(&tls)).unwrap();
        let (new_ca, new_tls) = stored(&rotated);
        let bundle = data(&new_ca, CA_CERT_KEY).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
        assert!(bundle.ends_with(&data(&ca, CA_CERT_KEY).unwrap()));
        assert_eq!(data(&new_tls, CA_CERT_KEY).unwrap(), bundle);
        assert!(
            new_ca
                .metadata
                .annotations
                .unwrap()
                .contains_key(PREVIOUS_CA_NOT_AFTER_ANNOTATION)
        );
    }

    #[test]
    fn conf_blocks_point_at_the_mounted_secret_and_routes_verify() {
        let c = cluster(3);
        let client = client_tls_conf(&c).unwrap();
        assert!(
            client.contains("cert_file: \"/etc/nats-tls/tls.crt\""),
            "{client}"
        );
        assert!(
            client.contains("ca_file: \"/etc/nats-tls/ca.crt\""),
            "{client}"
        );
        assert!(
            !client.contains("verify"),
            "clients log in with passwords: {client}"
        );
        let routes = route_tls_conf(&c).unwrap();
        assert!(routes.contains("verify: true"), "{routes}");

        let mut p = c.params().clone();
        p.tls = TlsMode::Disabled;
        let plain = BrokerCluster::new(p).unwrap();
        assert!(client_tls_conf(&plain).is_none() && route_tls_conf(&plain).is_none());
    }

    #[test]
    fn cert_manager_certificate_names_the_issuer_and_the_secret() {
        let issuer = IssuerRef {
            name: "corp-ca".into(),
            kind: "ClusterIssuer".into(),
            group: "cert-manager.io".into(),
        };
        let cert = certificate(&cluster(3), &issuer);
        assert_eq!(cert["kind"], "Certificate");
        assert_eq!(cert["metadata"]["name"], "main-tls");
        assert_eq!(cert["spec"]["secretName"], "main-tls");
        assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(cert["spec"]["ipAddresses"], json!(["127.0.0.1"]));
        assert!(
            cert["spec"]["dnsNames"]
                .as_array()
                .unwrap()
                .contains(&json!("*.main-headless.sluice.svc.cluster.local"))
        );
        assert!(
            cert["spec"]["usages"]
                .as_array()
                .unwrap()
                .contains(&json!("client auth"))
        );
    }
}
