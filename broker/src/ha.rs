//! High availability of Sluice's own state on the broker: the KV buckets of group config,
//! membership, leases and idempotency are replicated like the Broker, so losing one server
//! stops no group.
//!
//! | broker | replicas of Sluice's buckets |
//! |---|---|
//! | one server (no `cluster` block) | 1 |
//! | a JetStream cluster (3 or 5 servers) | 3 |
//!
//! Whether the broker is a cluster comes from the server itself (the `cluster` name in the
//! INFO it sends every client), so workers need no extra setting. Buckets created before
//! this rule (R1 on a cluster) are scaled up to R3 the next time they are opened; creating or
//! scaling up needs enough servers online, so while too few are, a new bucket is created with
//! one replica (with a warning) and scaled up by a later open.

use async_nats::jetstream::{self, kv};
use tracing::{info, warn};

use crate::error::{Result, broker_err};

/// Replicas of Sluice's own KV buckets on a cluster.
pub const CLUSTER_STATE_REPLICAS: usize = 3;

/// How many replicas Sluice's own buckets get on the broker `client` is connected to: 3 on
/// a JetStream cluster, 1 on a single server.
///
/// ```no_run
/// # async fn f(client: async_nats::Client) {
/// let replicas = sluice_broker::ha::state_replicas(&client);
/// assert!(replicas == 1 || replicas == 3);
/// # }
/// ```
pub fn state_replicas(client: &async_nats::Client) -> usize {
    let info = client.server_info();
    if info.cluster.as_deref().is_some_and(|c| !c.is_empty()) {
        CLUSTER_STATE_REPLICAS
    } else {
        1
    }
}

/// Opens the KV bucket `config.bucket`, creating it with [`state_replicas`] replicas when it
/// does not exist (the replicas in `config` are ignored), and scales an existing bucket up to
/// that many replicas when it has fewer.
///
/// # Errors
/// The bucket neither exists nor can be created (broker unreachable, permissions).
pub async fn ensure_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store> {
    let replicas = state_replicas(&js.client());
    let bucket = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&bucket).await {
        scale_up(js, &store, replicas).await;
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            num_replicas: replicas,
            ..config.clone()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        Err(e) if replicas > 1 => {
            // Another member may have created it meanwhile.
            if let Ok(store) = js.get_key_value(&bucket).await {
                return Ok(store);
            }
            warn!(bucket = %bucket, replicas, error = %e, "cannot create a replicated KV bucket now (servers down?): creating it with one replica, scaled up on a later start");
            js.create_key_value(kv::Config {
                num_replicas: 1,
                ..config
            })
            .await
            .map_err(|e| broker_err(format!("failed to create KV bucket {bucket}"), e))
        }
        Err(e) => Err(broker_err(
            format!("failed to create KV bucket {bucket}"),
            e,
        )),
    }
}

/// Raises the replicas of an existing bucket to `replicas`; failures only warn (retried on
/// the next open).
async fn scale_up(js: &jetstream::Context, store: &kv::Store, replicas: usize) {
    let mut stream = store.stream.clone();
    let current = match stream.info().await {
        Ok(info) => info.config.clone(),
        Err(e) => {
            warn!(bucket = %store.name, error = %e, "cannot read the KV bucket's replicas");
            return;
        }
    };
    if current.num_replicas >= replicas {
        return;
    }
    let from = current.num_replicas;
    let update = jetstream::stream::Config {
        num_replicas: replicas,
        ..current
    };
    match js.update_stream(&update).await {
        Ok(_) => info!(bucket = %store.name, from, to = replicas, "KV bucket scaled up"),
        Err(e) => {
            warn!(bucket = %store.name, from, to = replicas, error = %e, "failed to scale up the KV bucket (retried on the next start)")
        }
    }
}
