//! Test support shared by the tests of every Sluice crate: one home for what the test
//! binaries used to copy into themselves with `mod common;`.
//!
//! | module | what it gives a test |
//! |---|---|
//! | [`wait`] | [`wait_until`]: poll a condition with a generous deadline (never a fixed sleep) |
//! | [`nats`] | [`Harness`]: a real nats-server on a random port with a temp dir, and provisioning/publishing/reading helpers |
//! | [`member`] | [`Member`]: a worker-group member on its own runtime, so a "crash" drops every task at once; [`Record`]s of its handler calls |
//! | [`records`] | assertions over the records (no overlap, counts) and an [`EventCounter`] observer |
//! | [`child`] | worker members as child processes of the test binary (real `kill -9`, SIGTERM) |
//! | [`proxy`] | a TCP [`Proxy`] that cuts members off the broker |
//! | [`stress`] | [`CpuStress`]: busy threads on every core |
//! | [`k8s`] | the real-cluster tests' client (skip without `KUBECONFIG`), [`TempNamespace`], CRD installation |
//! | [`fake_api`] | [`FakeApi`]: a stateful in-memory Kubernetes API for controller flows |
//!
//! This crate is a dev-dependency only; it fails tests by panicking, which is why it allows
//! `unwrap`/`expect`/`panic` that the workspace lints deny elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod child;
pub mod fake_api;
pub mod k8s;
pub mod member;
pub mod nats;
pub mod proxy;
pub mod records;
pub mod stress;
pub mod wait;

pub use child::{CHILD_TEST, Child, ChildEvent, ChildSpec, Supervisor, child_counts, child_main};
pub use fake_api::{FakeApi, Recorded};
pub use k8s::{TempNamespace, client_or_skip, cluster_runs_pods, install_crds};
pub use member::{Behaviour, Member, MemberSpec, Record, Records, member_options, ok_behaviour};
pub use nats::{Harness, NS, queue_group, topic_group};
pub use proxy::Proxy;
pub use records::{EventCounter, assert_no_overlap, counts, ok_by_payload};
pub use stress::CpuStress;
pub use wait::wait_until;

/// Installs a test-writer tracing subscriber (filter from `RUST_LOG`, default `warn`) once.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
