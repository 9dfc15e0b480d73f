//! The exactly-once idempotency store: a KV bucket per group
//! (`names::idempotency_bucket`) whose entries live `idempotencyTtl` and record "this input's
//! handling completed". It is opened lazily, the first time an exactly-once group needs it.

use async_nats::jetstream::{self, kv};
use sluice_broker::GroupConfig;
use sluice_broker::names;
use tokio::sync::OnceCell;

use crate::error::Result;

/// Lazily opened idempotency bucket of one group.
#[derive(Debug)]
pub(crate) struct IdempotencyStore {
    js: jetstream::Context,
    store: OnceCell<kv::Store>,
}

impl IdempotencyStore {
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            store: OnceCell::new(),
        }
    }

    async fn store(&self, cfg: &GroupConfig) -> Result<&kv::Store> {
        self.store
            .get_or_try_init(|| async {
                crate::kv::open_bucket(&self.js, sluice_broker::group::idempotency_bucket(cfg)?)
                    .await
            })
            .await
    }

    /// Whether handling of `key` completed before.
    pub(crate) async fn seen(&self, cfg: &GroupConfig, key: &str) -> Result<bool> {
        let k = kv_key(key);
        let store = self.store(cfg).await?;
        store
            .get(&k)
            .await
            .map(|v| v.is_some())
            .map_err(|e| crate::error::broker(format!("failed to read idempotency key {k}"), e))
    }

    /// Records that handling of `key` completed.
    pub(crate) async fn record(&self, cfg: &GroupConfig, key: &str) -> Result<()> {
        let k = kv_key(key);
        let store = self.store(cfg).await?;
        store
            .put(&k, "done".into())
            .await
            .map(|_| ())
            .map_err(|e| crate::error::broker(format!("failed to write idempotency key {k}"), e))
    }
}

/// Any idempotency key as a valid, collision-free KV key.
fn kv_key(key: &str) -> String {
    names::escape_member(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kv_safe_and_distinct() {
        let a = kv_key("SLUICE_T__ns__t__0:42");
        let b = kv_key("SLUICE_T__ns__t__0:43");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
