//! Step 2, **validate** (pure): checks a group and what it points to fit together and turns
//! the spec into the broker's [`GroupConfig`]. A [`ValidGroup`] can only be made here, so the
//! build step cannot run on an unchecked spec.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sluice_broker::GroupConfig;

use super::dereference::GroupRefs;
use crate::controller::Failure;
use crate::crd::{ConsumerGroup, InvalidField};
use crate::desired::group::group_config;

/// A group whose spec and references were checked.
#[derive(Debug, Clone)]
pub struct ValidGroup {
    refs: GroupRefs,
    config: GroupConfig,
    workers: Option<(PodTemplateSpec, OwnerReference)>,
}

impl ValidGroup {
    /// What the group points to.
    pub fn refs(&self) -> &GroupRefs {
        &self.refs
    }

    /// The group's config as published to the broker.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The decoded worker pod template and the owner reference of the group, when it has a
    /// template.
    pub(super) fn workers(&self) -> Option<&(PodTemplateSpec, OwnerReference)> {
        self.workers.as_ref()
    }
}

/// Checks that the dead-letter queue is on the group's Broker, the spec maps onto a
/// [`GroupConfig`] and the worker template decodes.
pub fn validate(
    namespace: &str,
    name: &str,
    group: &ConsumerGroup,
    refs: GroupRefs,
) -> Result<ValidGroup, Failure> {
    if let Some(d) = &refs.dead_letter
        && d.spec.broker != refs.broker_name
    {
        return Err(InvalidField::new(
            "deadLetter.queue",
            format!(
                "DeadLetterQueue {} is on Broker {}, but the group is on Broker {}",
                kube::ResourceExt::name_any(d),
                d.spec.broker,
                refs.broker_name
            ),
        )
        .into());
    }
    let config = group_config(namespace, name, &group.spec, &refs.source)?;
    let workers = match &group.spec.template {
        Some(t) => Some((t.decode("template")?, owner_reference(group)?)),
        None => None,
    };
    Ok(ValidGroup {
        refs,
        config,
        workers,
    })
}

fn owner_reference(group: &ConsumerGroup) -> Result<OwnerReference, Failure> {
    kube::Resource::controller_owner_ref(group, &()).ok_or_else(|| Failure::Missing {
        reason: "NotYetStored",
        message: "the ConsumerGroup has no uid yet".into(),
    })
}
