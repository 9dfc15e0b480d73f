//! [`BrokerResource`]: the kinds that live on a broker (Topic, Queue, DeadLetterQueue). Each
//! implements it next to its reconcile (`topic.rs`, `queue.rs`, `dlq.rs`); the runtime turns
//! every implementation into a [`super::runtime::Reconciled`] kind with a finalizer, status
//! and Events.

use std::future::Future;
use std::time::Duration;

use super::context::ReconcileContext;
use super::kube_api::Object;
use super::metrics::Observe;
use super::{Failure, Outcome};
use crate::crd::DeletionPolicy;

/// A kind whose objects are provisioned on a broker and reconciled without a Kubernetes
/// client; deleting one touches the broker only with `deletionPolicy: Delete`. Its status
/// (the [`Observe::Status`]) also feeds the metrics.
pub trait BrokerResource: Object + Observe {
    /// Kind name for logs and metrics.
    const KIND: &'static str;

    /// What happens to the broker objects when this object is deleted.
    fn deletion_policy(&self) -> DeletionPolicy;

    /// Reconciles the object against its broker (the kind's kube-free reconcile).
    fn reconcile<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
        resync: Duration,
    ) -> impl Future<Output = Outcome<Self::Status>> + Send + 'a;

    /// Cleans up a deleted object on its broker.
    fn cleanup<'a>(
        &'a self,
        ctx: &'a ReconcileContext,
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a;
}
