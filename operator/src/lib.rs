//! sluice-operator

pub mod broker_cluster;
