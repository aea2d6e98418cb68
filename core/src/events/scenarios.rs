//! The event-bus rules, exercised through [`crate::machine::apply`] over an
//! in-memory store with the clock moved by hand.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::apply::Effect;
use crate::error::{DomainError, ErrorKind};
use crate::events::put::{NewEvent, Origin};
use crate::events::target::{Target, TargetInput};
use crate::events::{
    CreateEventBus, DeleteEventBus, DeleteRule, DescribeRule, NewRule, PutEvents, PutTargets,
    RemoveTargets, SetRuleState,
};
use crate::streams::CreateStream;
use crate::testing::World;
use crate::topics::subscription::Protocol;
use crate::topics::subscriptions::Subscribe;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn arn(service: &str, resource: &str) -> String {
    format!("arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}")
}

fn target(id: &str, arn: String) -> TargetInput {
    TargetInput {
        id: id.into(),
        arn,
        ..Default::default()
    }
}

impl World {
    fn rule(&mut self, bus: &str, name: &str, pattern: &str) {
        self.run(NewRule::new(bus, name, pattern, "", "").unwrap())
            .unwrap();
    }

    fn targets(&mut self, bus: &str, rule: &str, targets: Vec<TargetInput>) {
        let targets = targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| Target::new(&format!("targets[{i}]"), t).unwrap())
            .collect();
        let results = self
            .run(PutTargets {
                bus: bus.into(),
                rule: rule.into(),
                targets,
            })
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }

    fn put_on(
        &mut self,
        bus: &str,
        events: &[(&str, &str, Value)],
    ) -> Vec<Result<String, DomainError>> {
        let entries = events
            .iter()
            .map(|(source, detail_type, detail)| {
                NewEvent::new(
                    "",
                    source.to_string(),
                    detail_type.to_string(),
                    detail.to_string(),
                    vec![],
                    None,
                )
                .unwrap()
            })
            .collect();
        self.run(PutEvents {
            bus: bus.into(),
            origin: Origin {
                account: ACCOUNT.into(),
                region: REGION.into(),
            },
            entries,
        })
        .unwrap()
    }

    fn put_events(&mut self, events: &[(&str, &str, Value)]) -> Vec<String> {
        self.put_on("default", events)
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    }

    fn new_stream(&mut self, name: &str) {
        let cmd = CreateStream::new(name, 2, Some(24), None, None, None, BTreeMap::new()).unwrap();
        self.run(cmd).unwrap();
    }

    fn records(&self, stream: &str) -> Vec<(String, String)> {
        let s = crate::streams::require(&self.state, stream).unwrap();
        let mut out = Vec::new();
        for shard in s.open_shards() {
            let read = self
                .ask(crate::streams::ReadShard {
                    stream: s.id,
                    shard: shard.index,
                    from: 0,
                    limit: 1000,
                    max_bytes: 1 << 20,
                })
                .unwrap();
            for (_, r) in read.records {
                out.push((r.partition_key, String::from_utf8(r.data).unwrap()));
            }
        }
        out
    }

    fn events_in(&mut self, queue: &str) -> Vec<Value> {
        let got = self.drain(queue);
        got.iter()
            .map(|m| serde_json::from_str(self.body(&m.body.body)).unwrap())
            .collect()
    }
}

fn order(customer: &str, total: u32) -> (&'static str, &'static str, Value) {
    (
        "shop",
        "Order Placed",
        serde_json::json!({"customer": customer, "total": total}),
    )
}

#[test]
fn an_event_reaches_the_targets_of_every_matching_rule_once() {
    let mut w = World::new();
    w.queue("big-orders");
    w.queue("all-shop");
    w.new_stream("orders");
    w.topic("alerts", &[]);
    w.queue("alert-copies");
    w.run(Subscribe {
        topic: "alerts".into(),
        protocol: Protocol::Sqs,
        endpoint: "alert-copies".into(),
        attributes: crate::testing::map(&[("RawMessageDelivery", "true")]),
        id: "s1".into(),
        token: "t1".into(),
    })
    .unwrap();
    w.rule(
        "default",
        "big",
        r#"{"source": ["shop"], "detail": {"total": [{"numeric": [">=", 100]}]}}"#,
    );
    w.targets(
        "default",
        "big",
        vec![
            target("q", arn("sqs", "big-orders")),
            TargetInput {
                partition_key_path: "$.detail.customer".into(),
                ..target("s", arn("kinesis", "stream/orders"))
            },
            target("t", arn("sns", "alerts")),
        ],
    );
    w.rule("default", "shop", r#"{"source": [{"prefix": "sho"}]}"#);
    w.targets("default", "shop", vec![target("q", arn("sqs", "all-shop"))]);
    w.rule("default", "other", r#"{"source": ["billing"]}"#);
    w.targets(
        "default",
        "other",
        vec![target("q", arn("sqs", "big-orders"))],
    );

    let ids = w.put_events(&[
        order("ann", 150),
        order("bob", 20),
        ("billing", "Invoice", serde_json::json!({})),
    ]);
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3
    );

    // The big order and the invoice (rule "other") reach big-orders.
    let big = w.events_in("big-orders");
    let mut got: Vec<&str> = big.iter().map(|e| e["id"].as_str().unwrap()).collect();
    got.sort_unstable();
    let mut want = vec![ids[0].as_str(), ids[2].as_str()];
    want.sort_unstable();
    assert_eq!(got, want);
    let e = big.iter().find(|e| e["id"] == ids[0].as_str()).unwrap();
    assert_eq!(e["version"], "0");
    assert_eq!(e["source"], "shop");
    assert_eq!(e["detail-type"], "Order Placed");
    assert_eq!(e["account"], ACCOUNT);
    assert_eq!(e["region"], REGION);
    assert_eq!(e["resources"], serde_json::json!([]));
    assert_eq!(e["detail"]["customer"], "ann");
    assert_eq!(e["time"], crate::events::put::event_time(w.now));
    // Both orders reach all-shop; the invoice does not.
    assert_eq!(w.events_in("all-shop").len(), 2);
    // The stream holds the big order, keyed by its customer.
    let records = w.records("orders");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, "ann");
    assert!(records[0].1.contains(&ids[0]));
    // The topic delivered it on to its queue.
    let copies = w.events_in("alert-copies");
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["id"], ids[0].as_str());
    // A match per rule, a delivery per target, all counted.
    let routed = |target: Option<&str>, delivered: bool| {
        w.effects
            .iter()
            .filter(|e| {
                matches!(e, Effect::EventRouted { target: t, delivered: d, .. }
                    if t.as_deref() == target && *d == delivered)
            })
            .count()
    };
    assert_eq!(routed(None, true), 4);
    assert_eq!(routed(Some("q"), true), 4);
    assert_eq!(routed(Some("s"), true), 1);
    assert_eq!(routed(Some("q"), false), 0);
}

#[test]
fn a_disabled_rule_matches_nothing_until_enabled() {
    let mut w = World::new();
    w.queue("q");
    w.run(NewRule::new("default", "r", r#"{"source": ["shop"]}"#, "DISABLED", "").unwrap())
        .unwrap();
    w.targets("default", "r", vec![target("q", arn("sqs", "q"))]);
    w.put_events(&[order("ann", 1)]);
    assert!(w.drain("q").is_empty());
    w.run(SetRuleState {
        bus: "default".into(),
        name: "r".into(),
        enabled: true,
    })
    .unwrap();
    w.put_events(&[order("ann", 1)]);
    assert_eq!(w.drain("q").len(), 1);
}

#[test]
fn a_fifo_queue_target_keeps_the_group_and_deduplicates_by_event_id() {
    let mut w = World::new();
    w.fifo_queue("q.fifo");
    w.rule("default", "r", r#"{"source": ["shop"]}"#);
    w.targets(
        "default",
        "r",
        vec![TargetInput {
            message_group_id: "orders".into(),
            ..target("q", arn("sqs", "q.fifo"))
        }],
    );
    // A second rule sends each event to the queue again: the event id is
    // the deduplication id, so the queue takes it once.
    w.rule("default", "again", r#"{"source": ["shop"]}"#);
    w.targets(
        "default",
        "again",
        vec![TargetInput {
            message_group_id: "orders".into(),
            ..target("q", arn("sqs", "q.fifo"))
        }],
    );
    let ids = w.put_events(&[order("a", 1), order("b", 2), order("c", 3)]);
    let got: Vec<Value> = w.events_in("q.fifo");
    let order_seen: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        order_seen,
        ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // A FIFO queue needs the group.
    let err = Target::new("targets[0]", target("q", arn("sqs", "q.fifo"))).unwrap_err();
    assert!(
        err.message
            .contains("targets[0].sqs_parameters.message_group_id"),
        "{err}"
    );
}

#[test]
fn a_failed_delivery_goes_to_the_dead_letter_queue_and_the_event_stands() {
    let mut w = World::new();
    w.queue("dlq");
    w.queue("ok");
    w.rule("default", "r", r#"{"source": ["shop"]}"#);
    w.targets(
        "default",
        "r",
        vec![
            TargetInput {
                dead_letter_arn: arn("sqs", "dlq"),
                ..target("gone", arn("sqs", "missing"))
            },
            target("ok", arn("sqs", "ok")),
        ],
    );
    let ids = w.put_events(&[order("ann", 5)]);
    assert_eq!(w.drain("ok").len(), 1);
    let dead = w.drain("dlq");
    assert_eq!(dead.len(), 1);
    let attrs = &dead[0].body.attributes;
    let attr = |k: &str| attrs[k].string_value.clone().unwrap();
    assert_eq!(attr("TARGET_ARN"), arn("sqs", "missing"));
    assert_eq!(attr("RULE_ARN"), arn("events", "rule/r"));
    assert!(!attr("ERROR_CODE").is_empty());
    let e: Value = serde_json::from_str(w.body(&dead[0].body.body)).unwrap();
    assert_eq!(e["id"], ids[0].as_str());
    assert!(w.effects.iter().any(|e| matches!(e,
        Effect::EventRouted { target: Some(t), delivered: false, .. } if t == "gone")));
}

#[test]
fn a_target_with_a_retry_policy_is_tried_again_then_dead_lettered() {
    let mut w = World::new();
    w.queue("dlq");
    w.rule("default", "r", r#"{"source": ["shop"]}"#);
    w.targets(
        "default",
        "r",
        vec![
            TargetInput {
                retry_policy: Some((Some(3), Some(60))),
                ..target("later", arn("sqs", "later"))
            },
            TargetInput {
                dead_letter_arn: arn("sqs", "dlq"),
                retry_policy: Some((Some(1), None)),
                ..target("never", arn("sqs", "never"))
            },
        ],
    );
    let ids = w.put_events(&[order("ann", 5)]);
    // Both failed once and wait; nothing is dead-lettered yet.
    assert_eq!(crate::events::retry::count(&w.state).unwrap(), 2);
    assert!(w.drain("dlq").is_empty());
    w.queue("later");
    w.advance(2);
    let due = crate::events::retry::due(&w.state, w.now, 10).unwrap();
    assert_eq!(due.len(), 2);
    for (due_ms, seq) in due {
        assert!(w.run(crate::events::RetryDelivery { due_ms, seq }).unwrap());
    }
    // The queue that appeared took the event; the other ran out of tries.
    let got = w.events_in("later");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], ids[0].as_str());
    let dead = w.drain("dlq");
    assert_eq!(dead.len(), 1);
    let attrs = &dead[0].body.attributes;
    assert_eq!(
        attrs["TARGET_ARN"].string_value.as_deref(),
        Some(arn("sqs", "never").as_str())
    );
    assert_eq!(crate::events::retry::count(&w.state).unwrap(), 0);
    // A due time not yet reached, or a retry already made, changes nothing.
    assert!(!w
        .run(crate::events::RetryDelivery {
            due_ms: w.now + 1,
            seq: 1
        })
        .unwrap());
    // A bus target takes no retry policy; a policy's bounds are checked.
    let e = Target::new(
        "targets[0]",
        TargetInput {
            retry_policy: Some((None, None)),
            ..target("b", arn("events", "event-bus/default"))
        },
    )
    .unwrap_err();
    assert!(
        e.message.contains("targets[0].retry_policy"),
        "{}",
        e.message
    );
    let e = Target::new(
        "targets[0]",
        TargetInput {
            retry_policy: Some((Some(186), None)),
            ..target("q", arn("sqs", "q"))
        },
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("targets[0].retry_policy.maximum_retry_attempts"),
        "{}",
        e.message
    );
}

#[test]
fn targets_deliver_the_input_they_are_given() {
    let mut w = World::new();
    for q in ["whole", "constant", "path", "template"] {
        w.queue(q);
    }
    w.rule("default", "r", r#"{"source": ["shop"]}"#);
    w.targets(
        "default",
        "r",
        vec![
            target("whole", arn("sqs", "whole")),
            TargetInput {
                input: r#"{"fixed": true}"#.into(),
                ..target("constant", arn("sqs", "constant"))
            },
            TargetInput {
                input_path: "$.detail".into(),
                ..target("path", arn("sqs", "path"))
            },
            TargetInput {
                input_paths: crate::testing::map(&[
                    ("who", "$.detail.customer"),
                    ("n", "$.detail.total"),
                ]),
                input_template:
                    r#"{"text": "<who> spent <n>", "n": <n>, "rule": "<aws.events.rule-name>"}"#
                        .into(),
                ..target("template", arn("sqs", "template"))
            },
        ],
    );
    w.put_events(&[order("ann", 7)]);
    assert_eq!(w.events_in("whole")[0]["detail"]["total"], 7);
    assert_eq!(
        w.events_in("constant")[0],
        serde_json::json!({"fixed": true})
    );
    assert_eq!(
        w.events_in("path")[0],
        serde_json::json!({"customer": "ann", "total": 7})
    );
    assert_eq!(
        w.events_in("template")[0],
        serde_json::json!({"text": "ann spent 7", "n": 7, "rule": "r"})
    );
}

#[test]
fn an_event_goes_on_to_another_bus_and_never_loops() {
    let mut w = World::new();
    w.queue("q");
    for bus in ["a", "b"] {
        w.run(CreateEventBus {
            name: bus.into(),
            description: String::new(),
        })
        .unwrap();
    }
    w.rule("default", "fwd", r#"{"source": ["shop"]}"#);
    w.targets(
        "default",
        "fwd",
        vec![target("a", arn("events", "event-bus/a"))],
    );
    w.rule("a", "fwd", r#"{"source": ["shop"]}"#);
    w.targets("a", "fwd", vec![target("b", arn("events", "event-bus/b"))]);
    w.rule("b", "fwd", r#"{"source": ["shop"]}"#);
    w.targets(
        "b",
        "fwd",
        vec![
            target("a", arn("events", "event-bus/a")),
            target("q", arn("sqs", "q")),
        ],
    );
    let ids = w.put_events(&[order("ann", 1)]);
    // default -> a -> b reaches the queue; b -> a is a third hop, refused.
    let got = w.events_in("q");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], ids[0].as_str());
    assert!(w.effects.iter().any(|e| matches!(e,
        Effect::EventRouted { bus, target: Some(t), delivered: false, .. } if bus == "b" && t == "a")));
}

#[test]
fn a_function_target_stores_an_asynchronous_invocation() {
    let mut w = World::new();
    w.run(crate::testing::new_function("f")).unwrap();
    w.rule("default", "r", r#"{"source": ["shop"]}"#);
    w.targets(
        "default",
        "r",
        vec![target("f", arn("lambda", "function:f"))],
    );
    w.put_events(&[order("ann", 1), order("bob", 2)]);
    let f = crate::functions::require(&w.state, "f").unwrap();
    assert_eq!(f.pending_events, 2);
    assert!(w.effects.contains(&Effect::EventReady));
}

#[test]
fn buses_rules_and_targets_keep_their_rules() {
    let mut w = World::new();
    let kind = |r: Result<(), DomainError>| r.unwrap_err().kind;
    // The default bus exists and stays.
    assert_eq!(
        kind(w.run(DeleteEventBus {
            name: "default".into()
        })),
        ErrorKind::InvalidArgument
    );
    let create = |name: &str| CreateEventBus {
        name: name.into(),
        description: String::new(),
    };
    assert_eq!(kind(w.run(create("default"))), ErrorKind::AlreadyExists);
    w.run(create("app")).unwrap();
    assert_eq!(kind(w.run(create("app"))), ErrorKind::AlreadyExists);
    // A rule needs its bus and a valid pattern.
    let e = w
        .run(NewRule::new("nope", "r", r#"{"source": ["x"]}"#, "", "").unwrap())
        .unwrap_err();
    assert_eq!(e.code, "ResourceNotFoundException");
    let e = NewRule::new("app", "r", r#"{"source": "x"}"#, "", "").unwrap_err();
    assert_eq!(e.code, "InvalidEventPatternException");
    assert!(e.message.contains("event_pattern"), "{e}");
    // Five targets at most; a rule with targets is deleted only by force.
    w.rule("app", "r", r#"{"source": ["x"]}"#);
    w.queue("q");
    let six: Vec<Target> = (0..6)
        .map(|i| Target::new("t", target(&format!("t{i}"), arn("sqs", "q"))).unwrap())
        .collect();
    let results = w
        .run(PutTargets {
            bus: "app".into(),
            rule: "r".into(),
            targets: six,
        })
        .unwrap();
    assert!(results[..5].iter().all(Result::is_ok));
    assert_eq!(
        results[5].as_ref().unwrap_err().code,
        "LimitExceededException"
    );
    let delete = |force| DeleteRule {
        bus: "app".into(),
        name: "r".into(),
        force,
    };
    assert_eq!(kind(w.run(delete(false))), ErrorKind::InvalidArgument);
    let removed = w
        .run(RemoveTargets {
            bus: "app".into(),
            rule: "r".into(),
            ids: vec!["t0".into(), "t9".into()],
        })
        .unwrap();
    assert!(removed[0].is_ok() && removed[1].is_err());
    let r = w
        .ask(DescribeRule {
            bus: "app".into(),
            name: "r".into(),
        })
        .unwrap();
    assert_eq!(r.targets.len(), 4);
    w.run(delete(true)).unwrap();
    // Putting on a missing bus fails as a whole; deleting a bus takes its rules.
    w.rule("app", "r2", r#"{"source": ["x"]}"#);
    w.run(DeleteEventBus { name: "app".into() }).unwrap();
    assert!(crate::events::rules(&w.state, "app").unwrap().is_empty());
    let e = w
        .run(PutEvents {
            bus: "app".into(),
            origin: Origin {
                account: ACCOUNT.into(),
                region: REGION.into(),
            },
            entries: vec![],
        })
        .unwrap_err();
    assert_eq!(e.code, "ResourceNotFoundException");
}

#[test]
fn event_ids_are_the_same_on_every_replica_and_never_repeat() {
    let run = || {
        let mut w = World::new();
        w.put_events(&[order("a", 1), order("b", 2)])
            .into_iter()
            .chain(w.put_events(&[order("c", 3)]))
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert_eq!(distinct.len(), 3);
}

#[test]
fn bad_entries_are_refused_with_the_field_and_the_rule() {
    let e = NewEvent::new(
        "entries[1]",
        "".into(),
        "t".into(),
        "{}".into(),
        vec![],
        None,
    )
    .unwrap_err();
    assert!(e.message.contains("entries[1].source"), "{e}");
    let e = NewEvent::new(
        "entries[0]",
        "s".into(),
        "t".into(),
        "[1]".into(),
        vec![],
        None,
    )
    .unwrap_err();
    assert_eq!(e.code, "MalformedDetail");
    assert!(e.message.contains("entries[0].detail"), "{e}");
    let big = NewEvent::new(
        "",
        "s".into(),
        "t".into(),
        format!("{{\"x\": \"{}\"}}", "a".repeat(200_000)),
        vec![],
        None,
    )
    .unwrap();
    let e = crate::events::put::validate_batch(&[big.clone(), big]).unwrap_err();
    assert!(
        e.message.contains("entries") && e.message.contains("262144"),
        "{e}"
    );
}

mod archives {
    use super::*;
    use crate::events::archive::{NewArchive, NewReplay, ReplayState};
    use crate::events::{ArchiveTick, CancelReplay, DescribeReplay, ReplayStep};

    fn replay(name: &str, archive: &str, start_ms: u64, end_ms: u64, rules: &[&str]) -> NewReplay {
        NewReplay {
            name: name.into(),
            archive: archive.into(),
            start_ms,
            end_ms,
            bus: "default".into(),
            rules: rules.iter().map(|r| r.to_string()).collect(),
            origin: Origin {
                account: ACCOUNT.into(),
                region: REGION.into(),
            },
        }
    }

    /// Steps a replay until it is done; the steps it took.
    fn run_replay(w: &mut World, name: &str) -> usize {
        let mut steps = 0;
        while w.run(ReplayStep { name: name.into() }).unwrap() {
            steps += 1;
        }
        steps + 1
    }

    #[test]
    fn a_replay_puts_a_time_range_of_archived_events_back_on_the_rules() {
        let mut w = World::new();
        w.queue("q");
        w.queue("other");
        w.rule("default", "r", r#"{"source": ["shop"]}"#);
        w.targets("default", "r", vec![target("q", arn("sqs", "q"))]);
        w.rule("default", "r2", r#"{"source": ["shop"]}"#);
        w.targets("default", "r2", vec![target("q", arn("sqs", "other"))]);
        // Only big orders are archived.
        let big = r#"{"detail": {"total": [{"numeric": [">=", 100]}]}}"#;
        w.run(NewArchive::new("big", "default", big, 0, "").unwrap())
            .unwrap();
        let before = w.put_events(&[order("early", 500)]);
        w.advance(60);
        let from = w.now;
        let ids = w.put_events(&[order("ann", 150), order("bob", 20), order("cy", 300)]);
        w.advance(60);
        let to = w.now;
        w.put_events(&[order("late", 900)]);
        w.drain("q");
        w.drain("other");
        // The range holds ann's and cy's (bob's was not archived; early
        // and late are outside it); only rule r is asked for.
        w.run(replay("again", "big", from, to, &["r"])).unwrap();
        run_replay(&mut w, "again");
        let got = w.events_in("q");
        let replayed: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(replayed, vec![ids[0].as_str(), ids[2].as_str()]);
        assert!(got.iter().all(|e| e["replay-name"] == "again"));
        assert!(!replayed.contains(&before[0].as_str()));
        assert!(w.events_in("other").is_empty(), "rule r2 was not asked for");
        let r = w
            .ask(DescribeReplay {
                name: "again".into(),
            })
            .unwrap();
        assert_eq!(r.state, ReplayState::Completed);
        assert_eq!(r.replayed, 2);
        // A replayed event is not archived again.
        let a = w
            .ask(crate::events::DescribeArchive { name: "big".into() })
            .unwrap();
        assert_eq!(a.events, 4);
    }

    #[test]
    fn a_long_replay_goes_in_bounded_steps_and_can_be_cancelled() {
        let mut w = World::new();
        w.queue("q");
        w.rule("default", "r", r#"{"source": ["shop"]}"#);
        w.targets("default", "r", vec![target("q", arn("sqs", "q"))]);
        w.run(NewArchive::new("all", "default", "", 0, "").unwrap())
            .unwrap();
        w.check_invariants = false;
        let step = crate::events::archive::REPLAY_STEP;
        for i in 0..(2 * step + 10) / 10 {
            let batch: Vec<_> = (0..10).map(|j| order("x", (i * 10 + j) as u32)).collect();
            w.put_events(&batch);
        }
        w.check_invariants = true;
        w.drain("q");
        w.run(replay("all-of-it", "all", 0, w.now + 1, &[]))
            .unwrap();
        assert_eq!(run_replay(&mut w, "all-of-it"), 3);
        assert_eq!(w.drain("q").len(), 2 * step + 10);
        // Cancelled after one step, it routes no more.
        w.run(replay("stopped", "all", 0, w.now + 1, &[])).unwrap();
        assert!(w
            .run(ReplayStep {
                name: "stopped".into()
            })
            .unwrap());
        w.run(CancelReplay {
            name: "stopped".into(),
        })
        .unwrap();
        assert!(!w
            .run(ReplayStep {
                name: "stopped".into()
            })
            .unwrap());
        assert_eq!(w.drain("q").len(), step);
        let e = w
            .run(CancelReplay {
                name: "stopped".into(),
            })
            .unwrap_err();
        assert_eq!(e.code, "IllegalStatusException");
    }

    #[test]
    fn retention_drops_old_archived_events_and_a_deleted_archive_is_collected() {
        let mut w = World::new();
        w.run(NewArchive::new("week", "default", "", 1, "").unwrap())
            .unwrap();
        w.put_events(&[order("old", 1)]);
        w.advance(2 * 24 * 3600);
        w.put_events(&[order("new", 2)]);
        let a = crate::events::archive::require_archive(&w.state, "week").unwrap();
        assert!(crate::events::archive::needs_trim(&w.state, &a, w.now).unwrap());
        assert!(!w
            .run(ArchiveTick {
                name: "week".into()
            })
            .unwrap());
        assert!(!crate::events::archive::needs_trim(&w.state, &a, w.now).unwrap());
        let prefix = crate::store::keys::Key::new("earcev").u64(a.id).build();
        let kept = crate::store::StateRead::scan_prefix(&w.state, &prefix).count();
        assert_eq!(kept, 1, "the new event stays");
        // A deleted archive leaves its events to be collected.
        w.run(crate::events::DeleteArchive {
            name: "week".into(),
        })
        .unwrap();
        assert_eq!(
            crate::events::archive::garbage(&w.state, 10).unwrap(),
            vec![a.id]
        );
        assert!(w.run(crate::events::CollectArchive { id: a.id }).unwrap());
        assert_eq!(
            crate::store::StateRead::scan_prefix(&w.state, &prefix).count(),
            0
        );
        assert!(crate::events::archive::garbage(&w.state, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn archives_and_replays_keep_their_rules() {
        let mut w = World::new();
        w.run(CreateEventBus {
            name: "app".into(),
            description: String::new(),
        })
        .unwrap();
        w.run(NewArchive::new("a", "app", "", 0, "").unwrap())
            .unwrap();
        let e = w
            .run(NewArchive::new("a", "app", "", 0, "").unwrap())
            .unwrap_err();
        assert_eq!(e.code, "ResourceAlreadyExistsException");
        let e = w.run(DeleteEventBus { name: "app".into() }).unwrap_err();
        assert!(e.message.contains("archive"), "{e}");
        let e = NewArchive::new("a b", "app", "", 0, "").unwrap_err();
        assert!(e.message.contains("archive_name"), "{e}");
        let e = NewArchive::new("b", "app", "", -1, "").unwrap_err();
        assert!(e.message.contains("retention_days"), "{e}");
        // A replay goes to the archive's own bus, over a forward range.
        let e = w.run(replay("p", "a", 0, 10, &[])).unwrap_err();
        assert!(e.message.contains("destination.arn"), "{e}");
        let mut backwards = replay("p", "a", 10, 5, &[]);
        backwards.bus = "app".into();
        let e = w.run(backwards).unwrap_err();
        assert!(e.message.contains("event_end_time_ms"), "{e}");
        let mut ok = replay("p", "a", 0, 10, &[]);
        ok.bus = "app".into();
        w.run(ok.clone()).unwrap();
        let e = w.run(ok).unwrap_err();
        assert_eq!(e.code, "ResourceAlreadyExistsException");
    }
}

mod bounds {
    use super::*;
    use crate::events::archive::{NewArchive, NewReplay, ReplayState};
    use crate::events::{DescribeReplay, ReplayStep};

    /// Buses `a` and `b`, each with `rules` rules of five targets sending
    /// every event to the other: a fan-out that only the command's budget
    /// stops.
    fn ping_pong(w: &mut World, rules: usize) {
        for bus in ["a", "b"] {
            w.run(CreateEventBus {
                name: bus.into(),
                description: String::new(),
            })
            .unwrap();
        }
        point_at_each_other(w, rules);
    }

    /// Gives `a` and `b` `rules` rules each of five targets sending every
    /// event to the other bus.
    fn point_at_each_other(w: &mut World, rules: usize) {
        for (bus, other) in [("a", "b"), ("b", "a")] {
            for r in 0..rules {
                let name = format!("r{r}");
                w.rule(bus, &name, r#"{"source": ["shop"]}"#);
                let targets = (0..5)
                    .map(|t| {
                        target(
                            &format!("t{t}"),
                            arn("events", &format!("event-bus/{other}")),
                        )
                    })
                    .collect();
                w.targets(bus, &name, targets);
            }
        }
    }

    #[test]
    fn an_event_whose_deliveries_would_cross_the_budget_fails_whole() {
        let mut w = World::new();
        w.queue("q");
        ping_pong(&mut w, 20);
        w.rule("a", "keep", r#"{"source": ["shop"]}"#);
        w.targets("a", "keep", vec![target("q", arn("sqs", "q"))]);
        let before = w.effects.len();
        let r = w.put_on("a", &[order("ann", 1)]);
        assert_eq!(r[0].as_ref().unwrap_err().code, "LimitExceededException");
        assert!(w.drain("q").is_empty(), "the failed event left nothing");
        assert!(
            !w.effects[before..]
                .iter()
                .any(|e| matches!(e, Effect::EventRouted { .. })),
            "nor any count"
        );
        // A small event on a bus without the loop still goes through.
        w.rule("default", "r", r#"{"source": ["shop"]}"#);
        w.targets("default", "r", vec![target("q", arn("sqs", "q"))]);
        assert_eq!(w.put_events(&[order("bob", 2)]).len(), 1);
        assert_eq!(w.drain("q").len(), 1);
    }

    #[test]
    fn a_template_that_grows_too_large_fails_its_delivery_only() {
        let mut w = World::new();
        w.queue("q");
        w.queue("dlq");
        w.queue("plain");
        w.rule("default", "r", r#"{"source": ["shop"]}"#);
        let template = "<aws.events.event.json>".repeat(300);
        w.targets(
            "default",
            "r",
            vec![
                TargetInput {
                    input_paths: crate::testing::map(&[]),
                    input_template: template,
                    dead_letter_arn: arn("sqs", "dlq"),
                    ..target("huge", arn("sqs", "q"))
                },
                target("plain", arn("sqs", "plain")),
            ],
        );
        let big = ("shop", "x", serde_json::json!({"pad": "p".repeat(100_000)}));
        w.put_events(&[big]);
        assert!(w.drain("q").is_empty());
        let dead = w.drain("dlq");
        assert_eq!(dead.len(), 1);
        let code = dead[0].body.attributes["ERROR_CODE"].string_value.clone();
        assert_eq!(code.as_deref(), Some("LimitExceededException"));
        assert_eq!(w.drain("plain").len(), 1, "the other target got it");
    }

    #[test]
    fn a_replayed_event_over_the_budget_is_passed_over_and_the_replay_ends() {
        let mut w = World::new();
        ping_pong(&mut w, 0);
        w.run(NewArchive::new("all", "a", "", 0, "").unwrap())
            .unwrap();
        w.put_on("a", &[order("ann", 1), order("bob", 2)]);
        // The loop is made after the events were archived.
        point_at_each_other(&mut w, 20);
        w.run(NewReplay {
            name: "p".into(),
            archive: "all".into(),
            start_ms: 0,
            end_ms: w.now + 1,
            bus: "a".into(),
            rules: vec![],
            origin: Origin {
                account: ACCOUNT.into(),
                region: REGION.into(),
            },
        })
        .unwrap();
        let mut steps = 0;
        while w.run(ReplayStep { name: "p".into() }).unwrap() {
            steps += 1;
            assert!(steps < 10, "the replay moves on");
        }
        let r = w.ask(DescribeReplay { name: "p".into() }).unwrap();
        assert_eq!(r.state, ReplayState::Completed);
        assert_eq!((r.replayed, r.passed_over), (0, 2));
    }

    #[test]
    fn an_event_sent_on_to_another_bus_is_kept_in_that_bus_s_archive() {
        let mut w = World::new();
        w.run(CreateEventBus {
            name: "b".into(),
            description: String::new(),
        })
        .unwrap();
        w.run(NewArchive::new("b-events", "b", "", 0, "").unwrap())
            .unwrap();
        w.rule("default", "fwd", r#"{"source": ["shop"]}"#);
        w.targets(
            "default",
            "fwd",
            vec![target("b", arn("events", "event-bus/b"))],
        );
        w.put_events(&[order("ann", 1)]);
        let a = w
            .ask(crate::events::DescribeArchive {
                name: "b-events".into(),
            })
            .unwrap();
        assert_eq!(a.events, 1);
        // A bus target takes no input settings.
        let e = Target::new(
            "targets[0]",
            TargetInput {
                input: "{}".into(),
                ..target("b", arn("events", "event-bus/b"))
            },
        )
        .unwrap_err();
        assert!(e.message.contains("targets[0].input"), "{e}");
    }
}
