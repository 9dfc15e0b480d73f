//! KV helpers the SDK needs beyond async-nats' `Store`: buckets with per-key TTL
//! (`limit_markers`), and compare-and-set writes that carry a TTL (async-nats only offers a
//! TTL on `create`, and its create loses the TTL when it re-creates a deleted key).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::error::{Error, Result};

/// Opens a bucket the operator provisions with the group (`Broker::ensure_group_state`);
/// creates it only when it is missing and the identity may (a worker on the broker's shared
/// user, as in tests that provision nothing else).
pub(crate) async fn open_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store> {
    sluice_broker::ha::ensure_bucket(js, config)
        .await
        .map_err(Error::from)
}

/// Whole seconds for a per-key TTL (the server's unit), at least one.
pub(crate) fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_millis().div_ceil(1000).max(1) as u64
}

/// Writes `value` under `key` with a TTL. `expected`: `Some(rev)` = only if the key's last
/// revision is `rev` (0 = the key has no value); `None` = unconditionally. Returns the new
/// revision.
pub(crate) async fn put_ttl(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    value: Bytes,
    expected: Option<u64>,
    ttl: Duration,
) -> std::result::Result<u64, PublishError> {
    let mut headers = HeaderMap::new();
    if let Some(rev) = expected {
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            rev.to_string().as_str(),
        );
    }
    headers.insert("Nats-TTL", ttl_secs(ttl).to_string().as_str());
    let ack = js
        .publish_with_headers(format!("$KV.{bucket}.{key}"), headers, value)
        .await?
        .await?;
    Ok(ack.sequence)
}

/// Whether a compare-and-set write failed because the key moved on (someone else wrote it).
pub(crate) fn lost_race(e: &PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence
}

/// Creates `key` with a TTL only when it has no live value (absent, deleted or expired).
/// `Ok(None)` when someone else holds it.
pub(crate) async fn create_ttl(
    js: &jetstream::Context,
    store: &kv::Store,
    bucket: &str,
    key: &str,
    value: Bytes,
    ttl: Duration,
) -> Result<Option<u64>> {
    let expected = match store
        .entry(key)
        .await
        .map_err(|e| crate::error::broker(format!("failed to read {bucket}/{key}"), e))?
    {
        None => 0,
        Some(e) if matches!(e.operation, kv::Operation::Delete | kv::Operation::Purge) => {
            e.revision
        }
        Some(_) => return Ok(None),
    };
    match put_ttl(js, bucket, key, value, Some(expected), ttl).await {
        Ok(rev) => Ok(Some(rev)),
        Err(e) if lost_race(&e) => Ok(None),
        Err(e) => Err(crate::error::broker(
            format!("failed to create {bucket}/{key}"),
            e,
        )),
    }
}
