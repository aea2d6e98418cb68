//! Scenario tests of functions through the whole state machine (commands in,
//! results and state out), each command followed by the invariant checks.

use std::collections::BTreeMap;

use crate::functions::events::{Arns, Destination, EventConfig, RunOutcome, Settled};
use crate::functions::{AliasSpec, SettingsChange, Target};
use crate::queues::delivery::ReceiveRequest;
use crate::queues::CreateQueue;
use crate::testing::{new_function, World};

impl World {
    fn target(&self, name: &str, qualifier: &str) -> Result<Target, crate::error::DomainError> {
        {
            let t = self.ask(crate::functions::InvokeTarget {
                name: name.into(),
                qualifier: qualifier.into(),
            })?;
            Ok(t)
        }
    }

    fn publish_version(&mut self, name: &str) -> u64 {
        self.run(crate::functions::PublishVersion {
            name: name.into(),
            expected_sha256: None,
        })
        .unwrap()
        .number
    }

    fn settle_event(
        &mut self,
        name: &str,
        seq: u64,
        request_id: &str,
        outcome: RunOutcome,
    ) -> Settled {
        self.run(crate::functions::SettleEvent {
            name: name.into(),
            arns: Arns {
                function: format!("arn:aws:lambda:us-east-1:000000000000:function:{name}"),
                sns_prefix: "arn:aws:sns:us-east-1:000000000000:".into(),
            },
            seq,
            request_id: request_id.into(),
            outcome,
        })
        .unwrap()
    }
}

fn failure() -> RunOutcome {
    RunOutcome::Failure {
        response: br#"{"errorMessage":"boom"}"#.to_vec(),
        executed_version: "$LATEST".into(),
        retry_delay_ms: 1_000,
    }
}

#[test]
fn versions_keep_their_settings_and_aliases_route_to_them() {
    let mut w = World::new();
    w.run(new_function("f")).unwrap();
    assert_eq!(w.publish_version("f"), 1);
    w.run(crate::functions::UpdateFunctionConfiguration {
        name: "f".into(),
        change: SettingsChange {
            memory_mb: Some(512),
            ..Default::default()
        },
    })
    .unwrap();
    assert_eq!(w.publish_version("f"), 2);

    // $LATEST has the new settings, version 1 the old ones.
    let latest = w.target("f", "$LATEST").unwrap();
    assert!(latest.version.is_none());
    assert_eq!(latest.function.settings.memory_mb, 512);
    let v1 = w.target("f", "1").unwrap().version.unwrap();
    assert_eq!((v1.number, v1.settings.memory_mb), (1, 128));

    // An alias on version 1 sends a tenth to version 2.
    w.run(crate::functions::PutAlias {
        name: "f".into(),
        spec: AliasSpec {
            name: "live".into(),
            version: 1,
            additional: Some((2, 1_000)),
            description: String::new(),
        },
        create: true,
    })
    .unwrap();
    let live = w.target("f", "live").unwrap();
    assert_eq!(live.version.unwrap().number, 1);
    let (extra, share) = live.additional.unwrap();
    assert_eq!((extra.number, share), (2, 1_000));

    // Unknown qualifiers and deleted aliases resolve to nothing.
    assert_eq!(
        w.target("f", "nope").unwrap_err().code,
        "ResourceNotFoundException"
    );
    w.run(crate::functions::DeleteAlias {
        name: "f".into(),
        alias: "live".into(),
    })
    .unwrap();
    assert_eq!(
        w.target("f", "live").unwrap_err().code,
        "ResourceNotFoundException"
    );
    // A version that was never published does not exist.
    assert!(w.target("f", "3").is_err());
}

#[test]
fn a_failing_event_is_retried_then_its_record_reaches_the_failure_queue() {
    let mut w = World::new();
    w.run(new_function("f")).unwrap();
    let cmd = CreateQueue::new("failures", &BTreeMap::new(), BTreeMap::new()).unwrap();
    w.run(cmd).unwrap();
    w.run(crate::functions::PutEventInvokeConfig {
        name: "f".into(),
        config: EventConfig {
            max_retries: 1,
            max_age_s: 3_600,
            on_success: None,
            on_failure: Some(Destination::Queue("failures".into())),
        },
    })
    .unwrap();
    w.run(crate::functions::EnqueueEvent {
        name: "f".into(),
        qualifier: "$LATEST".into(),
        request_id: "r1".into(),
        payload: br#"{"order":7}"#.to_vec(),
    })
    .unwrap();
    let due = crate::functions::events::due(&w.state, w.now, 10, &|_, _| false).unwrap();
    assert_eq!(due.len(), 1);
    let seq = due[0].seq;

    // The first failure schedules a retry, a second later.
    assert_eq!(w.settle_event("f", seq, "r1", failure()), Settled::Retrying);
    assert!(
        crate::functions::events::due(&w.state, w.now, 10, &|_, _| false)
            .unwrap()
            .is_empty()
    );
    w.advance(1);
    let due = crate::functions::events::due(&w.state, w.now, 10, &|_, _| false).unwrap();
    assert_eq!(due[0].event.attempts, 1);

    // The second exhausts the retries: the record goes to the queue.
    assert_eq!(w.settle_event("f", seq, "r1", failure()), Settled::Done);
    assert_eq!(
        crate::functions::require(&w.state, "f")
            .unwrap()
            .pending_events,
        0
    );
    let r = w
        .run(crate::queues::ReceiveMessages {
            queue: "failures".into(),
            request: ReceiveRequest {
                max: 10,
                visibility_timeout: None,
                attempt_id: None,
            },
        })
        .unwrap();
    assert_eq!(r.messages.len(), 1);
    let record: serde_json::Value =
        serde_json::from_str(r.messages[0].body.body.inline().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(record["requestPayload"]["order"], 7);

    // A late duplicate settle changes nothing.
    assert_eq!(w.settle_event("f", seq, "r1", failure()), Settled::Unknown);
}

#[test]
fn reserved_concurrency_is_set_and_removed_and_deleting_the_function_forgets_it() {
    let mut w = World::new();
    w.run(new_function("f")).unwrap();
    w.run(crate::functions::PutFunctionConcurrency {
        name: "f".into(),
        reserved: Some(5),
    })
    .unwrap();
    assert_eq!(w.target("f", "").unwrap().reserved, Some(5));
    w.run(crate::functions::PutFunctionConcurrency {
        name: "f".into(),
        reserved: None,
    })
    .unwrap();
    assert_eq!(w.target("f", "").unwrap().reserved, None);
    w.run(crate::functions::PutFunctionConcurrency {
        name: "f".into(),
        reserved: Some(3),
    })
    .unwrap();
    w.run(crate::functions::DeleteFunction { name: "f".into() })
        .unwrap();
    w.run(new_function("f")).unwrap();
    assert_eq!(w.target("f", "").unwrap().reserved, None);
}
