//! sluice-operator: the custom resources of Sluice, their controllers, the autoscaler, the
//! broker-cluster builders and the `sluice` CLI.
//!
//! Where each concept lives across the crates: `docs/architecture.md` in the repository.
#![warn(missing_docs)]

pub mod autoscale;
pub mod broker_cluster;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod desired;
pub mod dev;
pub mod service;
