//! The TLS step of a Broker reconcile (see [`crate::broker_cluster`]'s `tls` module for what
//! is issued, for which names, and when it is renewed).
//!
//! - `Generated`: reads `<name>-ca` and `<name>-tls` (by name), lets the pure
//!   [`plan_tls`] decide, and server-side applies the Secrets it returns.
//! - `CertManager`: server-side applies the `Certificate` `<name>-tls`; the reconcile waits
//!   (`CertificatePending`) until cert-manager wrote the Secret.
//! - `Disabled`: nothing.
//!
//! In every enabled mode it returns a hash of `<name>-tls`'s data: the pod template carries
//! it ([`TLS_HASH_ANNOTATION`]), so a renewed certificate rolls the servers one at a time.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use time::OffsetDateTime;
use tracing::info;

use super::{Failure, MANAGER, kube_api};
use crate::broker_cluster::{
    BrokerCluster, TlsMode, ca_secret_name, certificate, plan_tls, tls_secret_name,
};

/// Annotation of the server pods: a hash of the `<name>-tls` Secret's data.
pub const TLS_HASH_ANNOTATION: &str = "sluice.dev/tls-hash";

/// What the TLS step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsOutcome {
    /// Whether a new CA was generated.
    pub ca_issued: bool,
    /// Whether a new server certificate was written.
    pub server_issued: bool,
    /// Hash of the `<name>-tls` data the servers mount; `None` with TLS disabled.
    pub hash: Option<String>,
}

/// Runs the TLS step for `cluster` at `now`.
pub async fn ensure_tls(
    client: &Client,
    cluster: &BrokerCluster,
    now: OffsetDateTime,
) -> Result<TlsOutcome, Failure> {
    let ns = cluster.namespace();
    let tls_name = tls_secret_name(cluster.name());
    let mut outcome = TlsOutcome::default();
    match &cluster.params().tls {
        TlsMode::Disabled => return Ok(outcome),
        TlsMode::Generated => {
            let ca: Option<Secret> =
                kube_api::get_opt(client, ns, &ca_secret_name(cluster.name())).await?;
            let tls: Option<Secret> = kube_api::get_opt(client, ns, &tls_name).await?;
            let writes = plan_tls(cluster, now, ca.as_ref(), tls.as_ref())
                .map_err(|e| Failure::broker_refused(e.message().to_string(), e))?;
            if let Some(secret) = &writes.ca_secret {
                kube_api::apply(client, secret).await?;
                info!(secret = %ca_secret_name(cluster.name()), "generated the broker's CA");
                outcome.ca_issued = true;
            }
            if let Some(secret) = &writes.tls_secret {
                kube_api::apply(client, secret).await?;
                info!(secret = %tls_name, "issued the broker's server certificate");
                outcome.server_issued = true;
            }
        }
        TlsMode::CertManager(issuer) => {
            let cert = certificate(cluster, issuer);
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
                "cert-manager.io",
                "v1",
                "Certificate",
            ));
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
            kube_api::bounded(
                || {
                    format!(
                        "failed to apply cert-manager Certificate {ns}/{tls_name} (is cert-manager installed?)"
                    )
                },
                api.patch(
                    &tls_name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&cert),
                ),
            )
            .await?;
        }
    }
    let secret: Option<Secret> = kube_api::get_opt(client, ns, &tls_name).await?;
    let Some(secret) = secret else {
        return Err(Failure::Missing {
            reason: "CertificatePending",
            message: format!(
                "waiting for cert-manager to issue Secret {tls_name} (see `kubectl describe certificate {tls_name}`)"
            ),
        });
    };
    let data: Vec<(String, Vec<u8>)> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    outcome.hash = Some(kube_api::content_hash(
        &serde_json::to_vec(&data).unwrap_or_default(),
    ));
    Ok(outcome)
}
