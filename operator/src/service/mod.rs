//! The operator as a long-running service: leader election on a Lease ([`leader`]), the
//! `/healthz`, `/readyz` and `/metrics` endpoint ([`http`]), applying its own CRDs at start
//! ([`crds`]) and telemetry with optional OTLP export ([`telemetry`]). `sluice operator`
//! (`cli/operator.rs`) wires them together with [`crate::controller::runtime`].

pub mod crds;
pub mod http;
pub mod leader;
pub mod telemetry;
