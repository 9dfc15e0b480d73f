//! sluice-operator

pub mod autoscale;
