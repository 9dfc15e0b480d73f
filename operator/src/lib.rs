//! sluice-operator

pub mod autoscale;
pub mod broker_cluster;
