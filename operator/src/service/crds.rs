//! Applies the operator's own CustomResourceDefinitions at start (server-side apply, field
//! manager `sluice-operator`), so `helm upgrade` (whose `crds/` folder is install-only) still
//! gets schema changes, then waits until the API server serves them.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tracing::info;

use crate::controller::MANAGER;
use crate::controller::kube_api::API_TIMEOUT;
use crate::crdgen::all_crds;

/// How long to wait for the CRDs to become Established.
pub const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the CRDs could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The API server refused or failed the apply.
    #[error(
        "failed to apply CRD {name}: {source}; the operator needs get/create/patch on customresourcedefinitions (or start it with --apply-crds=false and install the CRDs yourself)"
    )]
    Apply {
        /// CRD name.
        name: String,
        /// Client error.
        source: kube::Error,
    },
    /// A call took longer than the API timeout.
    #[error("applying CRD {0} timed out; the API server is slow or unreachable")]
    Timeout(String),
    /// The CRD was applied but is not served.
    #[error(
        "CRD {0} was applied but is not Established after {ESTABLISH_TIMEOUT:?}; check `kubectl describe crd {0}`"
    )]
    NotEstablished(String),
}

/// Whether a CRD's `Established` condition is `True`.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Applies every Sluice CRD and waits until each is Established.
pub async fn apply_crds(client: &Client) -> Result<(), CrdError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    for crd in all_crds() {
        let name = crd.name_any();
        let applied =
            tokio::time::timeout(API_TIMEOUT, api.patch(&name, &params, &Patch::Apply(&crd)))
                .await
                .map_err(|_| CrdError::Timeout(name.clone()))?
                .map_err(|source| CrdError::Apply {
                    name: name.clone(),
                    source,
                })?;
        let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
        let mut current = applied;
        while !is_established(&current) {
            if tokio::time::Instant::now() >= deadline {
                return Err(CrdError::NotEstablished(name));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            current = tokio::time::timeout(API_TIMEOUT, api.get(&name))
                .await
                .map_err(|_| CrdError::Timeout(name.clone()))?
                .map_err(|source| CrdError::Apply {
                    name: name.clone(),
                    source,
                })?;
        }
        info!(crd = %name, "CRD applied and established");
    }
    Ok(())
}
