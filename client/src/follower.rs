//! Reading a whole stream in order: [`StreamFollower`].

use std::collections::{BTreeMap, BTreeSet};

use sluice_proto::v1 as pb;

use crate::{Client, Error};

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every record kept: all shards from their oldest record.
    TrimHorizon,
    /// Records put from now on.
    Latest,
}

/// Follows every shard of a stream, in lineage order: a shard is read only
/// once all its parents (still kept) have been read to their end, so the
/// records of each partition key come in the order they were put, across
/// splits and merges.
pub struct StreamFollower {
    client: Client,
    stream: String,
    /// Shards being read, with their next iterator.
    reading: BTreeMap<String, String>,
    /// Shards read to their end.
    finished: BTreeSet<String>,
    /// Shards known, with every parent known of each. ListShards names two
    /// parents at most; a closed shard's GetRecords names all its
    /// children's, and those are merged in before a child is opened.
    parents: BTreeMap<String, BTreeSet<String>>,
    /// Shards that were open when a [`Start::Latest`] follower started:
    /// read from their end. Every other shard is read from its beginning.
    from_latest: BTreeSet<String>,
    /// A shard closed since the shard list was last read.
    refresh: bool,
}

impl StreamFollower {
    /// Starts following `stream` from `start`.
    pub async fn new(client: Client, stream: &str, start: Start) -> Result<Self, Error> {
        let mut f = StreamFollower {
            client,
            stream: stream.to_string(),
            reading: BTreeMap::new(),
            finished: BTreeSet::new(),
            parents: BTreeMap::new(),
            from_latest: BTreeSet::new(),
            refresh: false,
        };
        let shards = f.client.list_shards(stream).await?;
        for s in &shards {
            f.learn(
                s.shard_id.clone(),
                [
                    s.parent_shard_id.clone(),
                    s.adjacent_parent_shard_id.clone(),
                ],
            );
            if start == Start::Latest {
                let closed = s
                    .sequence_number_range
                    .as_ref()
                    .is_some_and(|r| !r.ending_sequence_number.is_empty());
                // A closed shard has nothing new; an open one is read from
                // its end, whatever its lineage.
                if closed {
                    f.finished.insert(s.shard_id.clone());
                } else {
                    f.from_latest.insert(s.shard_id.clone());
                }
            }
        }
        f.open_ready().await?;
        Ok(f)
    }

    fn learn(&mut self, shard: String, parents: impl IntoIterator<Item = String>) {
        self.parents
            .entry(shard)
            .or_default()
            .extend(parents.into_iter().filter(|p| !p.is_empty()));
    }

    /// Starts reading every shard whose known parents are all finished.
    async fn open_ready(&mut self) -> Result<(), Error> {
        let ready: Vec<String> = self
            .parents
            .iter()
            .filter(|(s, ps)| {
                !self.reading.contains_key(*s)
                    && !self.finished.contains(*s)
                    && ps
                        .iter()
                        .all(|p| self.finished.contains(p) || !self.parents.contains_key(p))
            })
            .map(|(s, _)| s.clone())
            .collect();
        for shard in ready {
            let kind = if self.from_latest.contains(&shard) {
                "LATEST"
            } else {
                "TRIM_HORIZON"
            };
            let it = self
                .client
                .get_shard_iterator(pb::GetShardIteratorRequest {
                    stream_name: self.stream.clone(),
                    shard_id: shard.clone(),
                    shard_iterator_type: kind.into(),
                    ..Default::default()
                })
                .await?;
            self.reading.insert(shard, it);
        }
        Ok(())
    }

    /// Reads once from every shard being read; returns (shard, record) in
    /// order within each shard. Records already taken from a shard are
    /// returned even when a later step fails; that step is tried again by
    /// the next poll (an error is returned only when nothing was read).
    pub async fn poll(&mut self, limit: i32) -> Result<Vec<(String, pb::Record)>, Error> {
        let mut out = Vec::new();
        match self.poll_into(limit, &mut out).await {
            Err(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    async fn poll_into(
        &mut self,
        limit: i32,
        out: &mut Vec<(String, pb::Record)>,
    ) -> Result<(), Error> {
        let shards: Vec<(String, String)> = self
            .reading
            .iter()
            .map(|(s, i)| (s.clone(), i.clone()))
            .collect();
        for (shard, it) in shards {
            let r = self.client.get_records(&it, limit).await?;
            out.extend(r.records.into_iter().map(|rec| (shard.clone(), rec)));
            if r.next_shard_iterator.is_empty() {
                self.reading.remove(&shard);
                self.finished.insert(shard);
                self.refresh = true;
                for c in r.child_shards {
                    self.learn(c.shard_id, c.parent_shards);
                }
            } else {
                self.reading.insert(shard, r.next_shard_iterator);
            }
        }
        if self.refresh {
            // A child's other parent may be a shard made after we listed
            // (a merge of split children): learn it before opening the child.
            for s in self.client.list_shards(&self.stream).await? {
                self.learn(s.shard_id, [s.parent_shard_id, s.adjacent_parent_shard_id]);
            }
            self.refresh = false;
        }
        self.open_ready().await
    }

    /// Shards read to their end so far.
    pub fn finished(&self) -> &BTreeSet<String> {
        &self.finished
    }
}
