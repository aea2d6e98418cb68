//! `PutRecordStream`: a producer's records to one stream over one call (the
//! shared machinery is in [`super::producer`]).
//!
//! The first message names the stream; the guard has authorised the call
//! for it (`kinesis:PutRecord`). Each record is checked with the rules of
//! `PutRecord`; those that arrive together go into one `PutRecords` command
//! (at most [`PUT_STREAM_COMMAND_MAX`] records, [`PUT_BYTES_MAX`] bytes of
//! data and keys; a larger record goes alone, as `PutRecord` takes it).
//! Records keep the order they were sent in: one command is in flight at a
//! time, and what arrives meanwhile makes the next command larger.

use futures::future::BoxFuture;
use sluice_core::limits::streams::{
    PUT_BYTES_MAX, PUT_STREAM_COMMAND_MAX, PUT_STREAM_IN_FLIGHT, PUT_STREAM_IN_FLIGHT_BYTES,
};
use sluice_proto::v1 as pb;
use tonic::Status;

use super::producer::{command, same_destination, Outcomes, Producer};
use super::refs::stream_ref;
use super::status::from_domain;
use super::Context;
use crate::streams::records::{NewRecord, Placed};
use crate::streams::{self, shard_id, PutRecords};

/// The reply stream of a `PutRecordStream`.
pub type Replies = super::producer::Replies<pb::PutRecordStreamResponse>;

/// A `PutRecordStream`'s stream, from its first message.
pub struct RecordProducer {
    name: String,
}

impl Producer for RecordProducer {
    type In = pb::PutRecordStreamRequest;
    type Out = pb::PutRecordStreamResponse;
    type Item = NewRecord;
    type Done = Placed;
    const RPC: &'static str = "PutRecordStream";
    const IN_FLIGHT: usize = PUT_STREAM_IN_FLIGHT;
    const IN_FLIGHT_BYTES: usize = PUT_STREAM_IN_FLIGHT_BYTES;
    const COMMAND_MAX: usize = PUT_STREAM_COMMAND_MAX;
    const COMMAND_BYTES_MAX: usize = PUT_BYTES_MAX;

    fn correlation_id(message: &Self::In) -> u64 {
        message.correlation_id
    }

    fn open(_ctx: &Context, first: &Self::In) -> Result<Self, Status> {
        Ok(RecordProducer {
            name: stream_ref("stream_name", &first.stream_name)?,
        })
    }

    fn ordered(&self) -> bool {
        true
    }

    /// One record, checked as `PutRecord` checks it.
    fn check(&self, _ctx: &Context, m: Self::In) -> Result<(NewRecord, usize), Status> {
        let same = |field: &str, given: &str| {
            same_destination(field, given, &self.name, "stream", stream_ref)
        };
        same("stream_name", &m.stream_name)?;
        let Some(r) = m.record else {
            return Err(super::status::invalid("record", "is required"));
        };
        same("record.stream_name", &r.stream_name)?;
        let record = NewRecord::new("record", r.data, r.partition_key, &r.explicit_hash_key)
            .map_err(from_domain)?;
        let size = record.size();
        Ok((record, size))
    }

    fn run(&self, ctx: Context, records: Vec<NewRecord>) -> BoxFuture<'static, Outcomes<Placed>> {
        let stream = self.name.clone();
        command(ctx, PutRecords { stream, records })
    }

    fn reply(id: u64, outcome: Result<Placed, pb::MessageError>) -> Self::Out {
        use pb::put_record_stream_response::Outcome;
        pb::PutRecordStreamResponse {
            correlation_id: id,
            outcome: Some(match outcome {
                Ok(p) => Outcome::Put(pb::PutRecordResponse {
                    shard_id: shard_id(p.shard),
                    sequence_number: streams::sequence_number(p.seq, p.shard),
                }),
                Err(e) => Outcome::Error(e),
            }),
        }
    }
}
