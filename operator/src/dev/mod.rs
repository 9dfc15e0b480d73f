//! `sluice dev`: the same manifests as in a cluster, on a laptop. An embedded nats-server
//! stands in for every Broker, the operator's reconcile core provisions JetStream, each
//! ConsumerGroup's workers run as local processes (the first container's `command`, `args` and
//! `env` plus the `SLUICE_*` settings) scaled by the same autoscaler as in the cluster, and
//! `batch/v1` Jobs run once (e.g. a producer).
//!
//! - [`manifest`]: reading the manifests;
//! - [`process`] and [`pool`]: local processes and worker pools;
//! - [`session`]: one run (broker, reconcile, autoscaling, edits, idleness);
//! - [`view`] and [`summary`]: the live view and the end-of-run accounting.

pub mod error;
pub mod manifest;
pub mod pool;
pub mod process;
pub mod session;
pub mod summary;
pub mod view;
