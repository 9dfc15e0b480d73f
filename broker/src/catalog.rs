//! One listing of every stream on a broker, read page by page (`$JS.API.STREAM.LIST`, 256
//! streams a request), so that a periodic check of many resources costs a few requests per
//! broker instead of several per resource.
//!
//! The operator's resync of a healthy Topic asks [`StreamCatalog::topic_in_place`]: when the
//! listing shows every partition stream as desired it answers the partitions' status with no
//! request at all; otherwise the caller provisions as usual (the listing may be up to its age
//! old, so it is only ever trusted to say "nothing to do").

use std::collections::HashMap;
use std::time::Instant;

use async_nats::jetstream::stream;
use futures::TryStreamExt;
use tracing::instrument;

use crate::client::Broker;
use crate::config::TopicSettings;
use crate::error::{Result, broker_err};
use crate::inspect::PartitionStatus;
use crate::names::{self, ResourceRef};
use crate::provision::{drift, topic_stream_config};

/// Every stream of a broker as one listing saw it.
#[derive(Debug, Clone)]
pub struct StreamCatalog {
    streams: HashMap<String, stream::Info>,
    read_at: Instant,
}

impl StreamCatalog {
    /// A catalog of `infos`, read at `read_at`.
    pub fn new(infos: impl IntoIterator<Item = stream::Info>, read_at: Instant) -> Self {
        Self {
            streams: infos
                .into_iter()
                .map(|i| (i.config.name.clone(), i))
                .collect(),
            read_at,
        }
    }

    /// When the listing was read.
    pub fn read_at(&self) -> Instant {
        self.read_at
    }

    /// Streams listed.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether the broker had no streams.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The listed info of stream `name`.
    pub fn get(&self, name: &str) -> Option<&stream::Info> {
        self.streams.get(name)
    }

    /// The partitions of `topic` when the listing shows exactly its desired streams (all
    /// `settings.partitions` present with the desired configuration, none beyond); `None`
    /// when anything would need provisioning (or a check the listing cannot answer).
    pub fn topic_in_place(
        &self,
        topic: &ResourceRef,
        settings: &TopicSettings,
    ) -> Option<Vec<PartitionStatus>> {
        if settings.partitions == 0
            || self
                .get(&names::topic_stream(topic, settings.partitions))
                .is_some()
        {
            return None;
        }
        (0..settings.partitions)
            .map(|p| {
                let desired = topic_stream_config(topic, p, settings).ok()?;
                let info = self.get(&desired.name)?;
                let current = &info.config;
                let same = current.retention == desired.retention
                    && current.storage == desired.storage
                    && drift(current, &desired).is_empty();
                same.then(|| PartitionStatus::of_stream(p, info))
            })
            .collect()
    }
}

impl Broker {
    /// Lists every stream with its configuration and state (one request per 256 streams).
    #[instrument(skip(self))]
    pub async fn stream_catalog(&self) -> Result<StreamCatalog> {
        let read_at = Instant::now();
        let infos: Vec<stream::Info> = self
            .jetstream()
            .streams()
            .try_collect()
            .await
            .map_err(|e| broker_err("failed to list the broker's streams", e))?;
        Ok(StreamCatalog::new(infos, read_at))
    }
}
