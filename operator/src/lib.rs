//! sluice-operator: the custom resources of Sluice, their controllers, and the `sluice` CLI.
#![warn(missing_docs)]

pub mod cli;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod desired;
