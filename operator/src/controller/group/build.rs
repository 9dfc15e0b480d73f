//! Step 3, **build** (pure): the objects a [`ValidGroup`] needs — the [`GroupConfig`] for the
//! broker and, with a template, the worker [`Deployment`].

use k8s_openapi::api::apps::v1::Deployment;
use sluice_broker::GroupConfig;

use super::validate::ValidGroup;
use crate::controller::Failure;
use crate::desired::worker::{WorkerInputs, worker_deployment};

/// What a group should look like: on the broker and in the cluster.
#[derive(Debug, Clone)]
pub struct DesiredGroup {
    /// The config published to the broker (consumers follow from it).
    pub config: GroupConfig,
    /// The worker Deployment, when the group has a template.
    pub deployment: Option<Deployment>,
}

/// Builds the desired objects of `valid`: workers reach the broker at `broker_url` and start
/// with `replicas`.
pub fn build(
    namespace: &str,
    name: &str,
    valid: &ValidGroup,
    broker_url: &str,
    replicas: i32,
) -> Result<DesiredGroup, Failure> {
    let config = valid.config().clone();
    let deployment = match valid.workers() {
        Some((template, owner)) => {
            let broker = &valid.refs().broker;
            let secret = broker.credentials_secret();
            let ca_secret = broker.tls_enabled().then(|| {
                crate::broker_cluster::tls_secret_name(&kube::ResourceExt::name_any(broker))
            });
            Some(worker_deployment(WorkerInputs {
                namespace,
                group: name,
                broker_urls: broker_url,
                credentials_secret: Some(&secret),
                ca_secret: ca_secret.as_deref(),
                ack_wait_ms: config.ack_wait_ms,
                replicas,
                owner: owner.clone(),
                template: template.clone(),
            })?)
        }
        None => None,
    };
    Ok(DesiredGroup { config, deployment })
}
