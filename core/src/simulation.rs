//! A seeded simulation of the state machine.
//!
//! Each seed drives thousands of random commands of every kind the state
//! machine has (queues, FIFO queues with a dead-letter queue and moves
//! through the outbox, streams with resharding and retention, topics with
//! queue and HTTPS subscriptions and their deliveries settled, functions
//! with versions, aliases and asynchronous events, workers, event source
//! mappings with leases and checkpoints, IAM, event buses with rules,
//! targets of every kind, archives and replays, housekeeping) over an
//! advancing clock, and checks three things as it goes:
//!
//! 1. after every step, the invariants of every domain
//!    ([`crate::machine::check`]);
//! 2. that applying the commands in log entries of several commands (as the
//!    leader batches them, one time stamp per entry) gives byte for byte the
//!    state, results and effects of applying them one at a time;
//! 3. that a snapshot taken midway (every key and value, encoded and decoded
//!    again) and installed on a fresh store replays the rest of the commands
//!    to the same state.
//!
//! A failure names the seed and the step; `SLUICE_SIM_SEED=N cargo test -p
//! sluice-core simulation` replays one seed.

use std::collections::BTreeMap;

use crate::apply::{Ctx, Effects, LogPosition};
use crate::command::{Command, CommandOutput};
use crate::error::DomainError;
use crate::machine;
use crate::queues::delivery::ReceiveRequest;
use crate::queues::message::{NewMessage, Outgoing};
use crate::queues::receipt::Receipt;
use crate::queues::CreateQueue;
use crate::store::{codec, MemState, StateRead, Txn, WriteBatch};
use crate::streams::records::NewRecord;
use crate::streams::CreateStream;
use crate::tags::{Change, Tagged};
use crate::topics::publish::{Publication, PublishInput};
use crate::topics::subscription::{normalize_endpoint, Protocol};
use crate::topics::subscriptions::Subscribe;
use crate::topics::CreateTopic;
use crate::{functions, iam, mappings, queues, streams, topics, workers};

/// SplitMix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const QUEUES: [&str; 4] = ["q0", "q1", "f0.fifo", "dlq"];
const STREAMS: [&str; 2] = ["s0", "s1"];
const TOPICS: [&str; 2] = ["t0", "t1"];
const FUNCTIONS: [&str; 2] = ["fn0", "fn1"];
const ARN: &str = "arn:aws:sqs:us-east-1:000000000000:";
const BUSES: [&str; 2] = ["default", "b0"];
const PATTERNS: [&str; 4] = [
    r#"{"source": ["app"]}"#,
    r#"{"source": [{"prefix": "ap"}], "detail": {"n": [{"numeric": [">", 2]}]}}"#,
    r#"{"detail-type": [{"wildcard": "*ed"}]}"#,
    r#"{"$or": [{"source": ["ops"]}, {"detail": {"n": [0, 1]}}]}"#,
];

/// What the generator remembers of earlier results, to make later commands
/// that refer to them (receipts, ids).
#[derive(Default)]
struct Memory {
    receipts: BTreeMap<String, Vec<Receipt>>,
    queue_ids: BTreeMap<String, (u64, u64)>,
    subscriptions: BTreeMap<String, Vec<String>>,
    events: BTreeMap<String, Vec<(u64, String)>>,
    mappings: BTreeMap<String, mappings::Mapping>,
    leases: BTreeMap<String, (u64, String)>,
    step: u64,
    /// The entries applied so far, from index 1: queue messages keep their
    /// bodies there.
    log: Vec<Vec<Command>>,
}

impl Memory {
    /// The body a reference names, read from the log.
    fn body(&self, r: &queues::layout::BodyRef) -> Option<&str> {
        let entry = self.log.get((r.index as usize).checked_sub(1)?)?;
        entry.get(r.command as usize)?.sent_body(r)
    }
}

fn message(rng: &mut Rng, fifo: bool, n: u64) -> NewMessage {
    let out = Outgoing {
        body: format!("m{n}-{}", "x".repeat(rng.below(40) as usize)),
        delay_seconds: (!fifo && rng.chance(20)).then(|| rng.below(5) as i32),
        group_id: if fifo {
            format!("g{}", rng.below(3))
        } else {
            String::new()
        },
        dedup_id: if fifo {
            format!("d{}", rng.below(50))
        } else {
            String::new()
        },
        ..Outgoing::default()
    };
    NewMessage::validate("", fifo, out).expect("generated messages are valid")
}

fn create_queue(name: &str, rng: &mut Rng) -> Command {
    let mut attrs = BTreeMap::new();
    if name != "dlq" && rng.chance(60) {
        attrs.insert(
            "RedrivePolicy".to_string(),
            format!(
                "{{\"deadLetterTargetArn\":\"{ARN}dlq\",\"maxReceiveCount\":{}}}",
                1 + rng.below(3)
            ),
        );
    }
    if rng.chance(30) {
        attrs.insert("VisibilityTimeout".to_string(), rng.below(4).to_string());
    }
    if crate::queues::is_fifo_name(name) {
        attrs.insert("FifoQueue".to_string(), "true".to_string());
    }
    Command::CreateQueue(CreateQueue::new(name, &attrs, BTreeMap::new()).expect("valid queue"))
}

/// One random step: usually one command, sometimes a pair that belongs
/// together (a move out of a queue's outbox is accepted by its destination,
/// then acknowledged by its source, as the leader's housekeeper does it).
/// `state` is the state before the entry, as the leader reads it.
fn commands(rng: &mut Rng, mem: &mut Memory, state: &MemState, now_ms: u64) -> Vec<Command> {
    match rng.below(40) {
        0 => move_outbox(rng, mem, state, now_ms),
        1 => settle_deliveries(rng, state, now_ms),
        2 | 3 => vec![function_command(rng, mem)],
        4 | 5 => vec![mapping_command(rng, mem)],
        6 => vec![iam_command(rng)],
        7 | 8 => schedule_commands(rng, state, now_ms),
        _ => vec![command(rng, mem)],
    }
}

/// A random change of schedules, or the firings the leader would propose
/// now (and now and then a stale one, which must change nothing).
fn schedule_commands(rng: &mut Rng, state: &MemState, now_ms: u64) -> Vec<Command> {
    use crate::schedules::{self, NewSchedule, ScheduleTarget, ScheduleTargetInput};
    let name = format!("s{}", rng.below(3));
    let due = schedules::due(state, now_ms, 4).unwrap_or_default();
    match rng.below(6) {
        0 | 1 => {
            let expressions = [
                "rate(1 minute)",
                "rate(5 minutes)",
                "cron(0/2 * * * ? *)",
                "cron(30 1 ? * MON-FRI *)",
                "at(2023-11-15T00:00:00)",
            ];
            let (queue, fifo) = *rng.pick(&[("q0", false), ("q1.fifo", true), ("gone", false)]);
            let target = ScheduleTarget::new(ScheduleTargetInput {
                arn: format!("arn:aws:sqs:us-east-1:000000000000:{queue}"),
                input: "<aws.scheduler.scheduled-time>".into(),
                message_group_id: if fifo { "g".into() } else { String::new() },
                dead_letter_arn: if rng.chance(50) {
                    "arn:aws:sqs:us-east-1:000000000000:q0".into()
                } else {
                    String::new()
                },
                max_event_age_s: rng.chance(30).then_some(60),
                max_attempts: Some(rng.below(3) as u32),
                ..Default::default()
            })
            .expect("a valid target");
            let settings = NewSchedule::new(
                schedules::DEFAULT_GROUP.into(),
                name,
                rng.pick(&expressions).to_string(),
                rng.pick(&["", "America/New_York", "Asia/Kolkata"])
                    .to_string(),
                (None, rng.chance(20).then(|| now_ms + 600_000)),
                String::new(),
                !rng.chance(15),
                if rng.chance(30) {
                    (true, 1 + rng.below(5) as u32)
                } else {
                    (false, 0)
                },
                target,
                rng.chance(50),
                crate::events::put::Origin {
                    account: "000000000000".into(),
                    region: "us-east-1".into(),
                },
            )
            .expect("a valid schedule");
            if rng.chance(50) {
                vec![Command::CreateSchedule(settings)]
            } else {
                vec![schedules::UpdateSchedule { settings }.into()]
            }
        }
        2 if rng.chance(30) => vec![schedules::DeleteSchedule {
            group: schedules::DEFAULT_GROUP.into(),
            name,
        }
        .into()],
        2 => vec![schedules::FireSchedule {
            group: schedules::DEFAULT_GROUP.into(),
            name,
            due_ms: now_ms - rng.below(120_000),
        }
        .into()],
        // The failed deliveries the leader would try again now.
        3 => crate::events::retry::due(state, now_ms, 4)
            .unwrap_or_default()
            .into_iter()
            .map(|(due_ms, seq)| crate::events::RetryDelivery { due_ms, seq }.into())
            .chain(std::iter::once(
                crate::events::RetryDelivery {
                    due_ms: now_ms,
                    seq: rng.below(50),
                }
                .into(),
            ))
            .collect(),
        _ => due
            .into_iter()
            .map(|(group, name, due_ms)| {
                schedules::FireSchedule {
                    group,
                    name,
                    due_ms,
                }
                .into()
            })
            .collect(),
    }
}

/// The leader's move of a queue's outbox: accept, then acknowledge, each
/// message with its body read out of the log.
fn move_outbox(rng: &mut Rng, mem: &Memory, state: &MemState, now_ms: u64) -> Vec<Command> {
    let source = *rng.pick(&QUEUES);
    let Ok(needs) = queues::housekeeping::needs(state, source, now_ms, 5) else {
        return vec![queues::QueueTick {
            queue: source.into(),
        }
        .into()];
    };
    let Some((gen, _, first)) = needs.outbox.first() else {
        return vec![queues::MoveTaskStep {
            queue: source.into(),
        }
        .into()];
    };
    let (gen, destination) = (*gen, first.destination.clone());
    let entries: Vec<_> = needs
        .outbox
        .into_iter()
        .filter(|(g, _, e)| *g == gen && e.destination == destination)
        .collect();
    vec![
        queues::AcceptMoved {
            queue: destination,
            from: needs.qid,
            messages: entries
                .iter()
                .map(|(_, seq, e)| {
                    let mut m = e.message.clone();
                    if let queues::layout::BodyText::Logged(r) = &m.body.body {
                        let body = mem.body(r).expect("a live reference names its body");
                        m.body.body = queues::layout::BodyText::Inline(body.to_string());
                    }
                    (*seq, m)
                })
                .collect(),
        }
        .into(),
        queues::AcknowledgeMoved {
            queue: source.into(),
            gen,
            seqs: entries.iter().map(|(_, seq, _)| *seq).collect(),
        }
        .into(),
    ]
}

/// The leader's deliverer settling due topic outbox entries (HTTP/S
/// subscriptions' confirmation requests and notifications).
fn settle_deliveries(rng: &mut Rng, state: &MemState, now_ms: u64) -> Vec<Command> {
    let due = topics::outbox::due(state, now_ms, 5, 5, &|_, _| false).unwrap_or_default();
    let Some(first) = due.first() else {
        return vec![topics::TopicTick {
            topic: rng.pick(&TOPICS).to_string(),
        }
        .into()];
    };
    let results = due
        .iter()
        .filter(|d| d.topic_id == first.topic_id)
        .map(|d| {
            let outcome = if rng.chance(50) {
                topics::outbox::Outcome::Delivered
            } else {
                topics::outbox::Outcome::Failed("connection refused".into())
            };
            (d.seq, outcome)
        })
        .collect();
    vec![topics::SettleDeliveries {
        topic: first.topic.clone(),
        topic_id: first.topic_id,
        results,
    }
    .into()]
}

/// Function configuration: code, settings, aliases, event invoke config.
fn function_command(rng: &mut Rng, mem: &mut Memory) -> Command {
    let f = *rng.pick(&FUNCTIONS);
    match rng.below(5) {
        0 => functions::UpdateFunctionCode {
            name: f.into(),
            code: crate::testing::new_function(f).code,
        }
        .into(),
        1 => functions::UpdateFunctionConfiguration {
            name: f.into(),
            change: functions::SettingsChange {
                memory_mb: Some(128 << rng.below(3)),
                ..Default::default()
            },
        }
        .into(),
        2 => functions::PutAlias {
            name: f.into(),
            spec: functions::AliasSpec {
                name: "live".into(),
                version: 1 + rng.below(2),
                additional: None,
                description: String::new(),
            },
            create: rng.chance(50),
        }
        .into(),
        3 => functions::PutEventInvokeConfig {
            name: f.into(),
            config: functions::events::EventConfig {
                max_retries: rng.below(3) as u32,
                max_age_s: 60 + rng.below(3600) as u32,
                on_success: None,
                on_failure: None,
            },
        }
        .into(),
        _ => {
            let id = format!("w{}", rng.below(2));
            mem.step += 1;
            if rng.chance(20) {
                workers::WorkerLeave {
                    id,
                    owner: "admin".into(),
                }
                .into()
            } else {
                Command::WorkerHeartbeat(workers::Heartbeat {
                    id,
                    address: "127.0.0.1:9".into(),
                    memory_mb: 1024,
                    memory_used_mb: 128 * rng.below(4),
                    running: rng.below(3) as u32,
                    warm: Vec::new(),
                    owner: "admin".into(),
                    tls_fingerprint: String::new(),
                })
            }
        }
    }
}

/// Event source mappings: create, update, delete, leases, checkpoints.
fn mapping_command(rng: &mut Rng, mem: &mut Memory) -> Command {
    use mappings::{settle, NewMapping, SettingsChange, Source};
    let f = *rng.pick(&FUNCTIONS);
    let uuid = format!("u{}", rng.below(3));
    mem.step += 1;
    match rng.below(7) {
        0 | 1 => {
            let source = if rng.chance(50) {
                Source::Queue(rng.pick(&QUEUES).to_string())
            } else {
                Source::Stream(rng.pick(&STREAMS).to_string())
            };
            let change = SettingsChange {
                starting_position: matches!(source, Source::Stream(_)).then(|| "LATEST".into()),
                ..Default::default()
            };
            Command::CreateEventSourceMapping(NewMapping {
                uuid,
                function: f.into(),
                settings: settle(None, &source, false, &change).expect("valid settings"),
                source,
            })
        }
        2 => match mem.mappings.get(&uuid).cloned() {
            Some(m) => mappings::UpdateEventSourceMapping {
                function: m.function.clone(),
                uuid,
                expected_ms: m.modified_ms,
                settings: mappings::Settings {
                    enabled: rng.chance(70),
                    ..m.settings
                },
            }
            .into(),
            None => mappings::DeleteEventSourceMapping {
                function: f.into(),
                uuid,
            }
            .into(),
        },
        3 => mappings::AssignLeases {
            function: f.into(),
            uuid,
            slots: vec![(0, format!("w{}", rng.below(2)))],
        }
        .into(),
        4 | 5 => {
            let lease = mem.leases.get(&uuid).cloned().unwrap_or_default();
            Command::CommitCheckpoint(mappings::checkpoints::Commit {
                function: f.into(),
                uuid,
                slot: 0,
                epoch: lease.0,
                worker: lease.1,
                seq: mem.step,
                finished: rng.chance(10),
            })
        }
        _ if rng.chance(30) => mappings::DeleteEventSourceMapping {
            function: f.into(),
            uuid,
        }
        .into(),
        _ => mappings::SetMappingResult {
            function: f.into(),
            uuid,
            result: "OK".into(),
        }
        .into(),
    }
}

/// Principals, access keys and policies.
fn iam_command(rng: &mut Rng) -> Command {
    let principal = format!("p{}", rng.below(2));
    let key = format!("AKIASIMULATION{:04}", rng.below(4));
    match rng.below(8) {
        0 => iam::CreatePrincipal {
            name: principal,
            kind: iam::Kind::User,
            policies: Vec::new(),
        }
        .into(),
        1 => iam::DeletePrincipal { name: principal }
        .into(),
        2 => iam::CreateAccessKey {
            principal,
            access_key_id: key,
            sealed_secret: "sealed".into(),
        }
        .into(),
        3 => iam::DeleteAccessKey {
            principal,
            access_key_id: key,
        }
        .into(),
        4 => iam::PutPolicy {
            name: "reader".into(),
            document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:ReceiveMessage","Resource":"*"}]}"#.into(),
        }
        .into(),
        5 => iam::DeletePolicy {
            name: "reader".into(),
        }
        .into(),
        6 => iam::AttachPolicy {
            principal,
            policy: "reader".into(),
        }
        .into(),
        _ => iam::DetachPolicy {
            principal,
            policy: "reader".into(),
        }
        .into(),
    }
}

/// Adds or removes a tag (now and then one the rules refuse).
fn tag(rng: &mut Rng, resource: Tagged) -> Command {
    let key = if rng.chance(5) {
        "aws:reserved".to_string()
    } else {
        format!("k{}", rng.below(3))
    };
    let change = if rng.chance(60) {
        Change::Add(BTreeMap::from([(key, "v".to_string())]))
    } else {
        Change::Remove(vec![key])
    };
    crate::tags::Tag { resource, change }.into()
}

/// One random command of the queue, stream, topic and function kinds.
fn command(rng: &mut Rng, mem: &mut Memory) -> Command {
    mem.step += 1;
    let n = mem.step;
    let q = *rng.pick(&QUEUES);
    let s = *rng.pick(&STREAMS);
    let t = *rng.pick(&TOPICS);
    let f = *rng.pick(&FUNCTIONS);
    match rng.below(39) {
        0 => create_queue(q, rng),
        1 if rng.chance(15) => queues::DeleteQueue { name: q.into() }.into(),
        2 if rng.chance(10) => queues::PurgeQueue { name: q.into() }.into(),
        2..=6 => queues::SendMessages {
            queue: q.into(),
            messages: (0..1 + rng.below(4))
                .map(|i| message(rng, q.ends_with(".fifo"), n * 10 + i))
                .collect(),
        }
        .into(),
        7..=9 => queues::ReceiveMessages {
            queue: q.into(),
            request: ReceiveRequest {
                max: 1 + rng.below(4) as u32,
                visibility_timeout: rng.chance(50).then(|| rng.below(4) as u32),
                attempt_id: (q.ends_with(".fifo") && rng.chance(20))
                    .then(|| format!("a{}", rng.below(3))),
            },
        }
        .into(),
        10 | 11 => {
            let receipts = mem.receipts.entry(q.to_string()).or_default();
            let take = (rng.below(3) as usize).min(receipts.len());
            queues::DeleteMessages {
                queue: q.into(),
                receipts: receipts.drain(..take).collect(),
            }
            .into()
        }
        12 => {
            let receipts = mem.receipts.get(q).cloned().unwrap_or_default();
            queues::ChangeVisibility {
                queue: q.into(),
                changes: receipts
                    .into_iter()
                    .take(2)
                    .map(|r| (r, rng.below(3) as u32))
                    .collect(),
            }
            .into()
        }
        13 => queues::QueueTick { queue: q.into() }.into(),
        14 => match mem.queue_ids.get(q) {
            Some(&(qid, gen)) if rng.chance(50) => queues::CollectGarbage { qid, gen }.into(),
            _ => queues::MoveTaskStep {
                queue: "dlq".into(),
            }
            .into(),
        },
        15 => queues::StartMoveTask {
            queue: "dlq".into(),
            destination: rng.chance(50).then(|| "q0".to_string()),
            rate: rng.chance(30).then_some(1 + rng.below(5) as u32),
        }
        .into(),
        16 if rng.chance(30) => queues::SetQueueAttributes {
            name: q.into(),
            attributes: queues::attributes::parse(
                &BTreeMap::from([("DelaySeconds".to_string(), rng.below(3).to_string())]),
                q.ends_with(".fifo"),
            )
            .expect("valid attributes"),
        }
        .into(),
        16 => tag(rng, Tagged::Queue(q.into())),
        17 if rng.chance(20) => queues::CancelMoveTask {
            queue: "dlq".into(),
            handle: format!("h{}", rng.below(3)),
        }
        .into(),
        17 => tag(rng, Tagged::Queue(q.into())),
        18 => Command::CreateStream(
            CreateStream::new(
                s,
                1 + rng.below(3) as i32,
                Some(24),
                None,
                None,
                None,
                BTreeMap::new(),
            )
            .expect("valid stream"),
        ),
        19 if rng.chance(10) => streams::DeleteStream { name: s.into() }.into(),
        19..=21 => streams::PutRecords {
            stream: s.into(),
            records: (0..1 + rng.below(5))
                .map(|i| {
                    NewRecord::new(
                        "",
                        format!("r{n}-{i}").into_bytes(),
                        format!("pk{}", rng.below(20)),
                        "",
                    )
                    .expect("valid record")
                })
                .collect(),
        }
        .into(),
        22 => match rng.below(4) {
            0 => streams::SplitShard {
                name: s.into(),
                shard: rng.below(6) as u32,
                new_start: u128::from(rng.next()) << 64,
            }
            .into(),
            1 => streams::MergeShards {
                name: s.into(),
                shard: rng.below(6) as u32,
                adjacent: rng.below(6) as u32,
            }
            .into(),
            2 => streams::UpdateShardCount {
                name: s.into(),
                target: 1 + rng.below(4) as u32,
            }
            .into(),
            _ => streams::TrimShard {
                name: s.into(),
                shard: rng.below(6) as u32,
            }
            .into(),
        },
        23 => streams::SetStreamRetention {
            name: s.into(),
            hours: 24 + rng.below(48) as u32,
            increase: rng.chance(50),
        }
        .into(),
        24 => match rng.below(4) {
            0 => streams::RegisterConsumer {
                name: s.into(),
                consumer: format!("c{}", rng.below(2)),
            }
            .into(),
            1 => streams::DeregisterConsumer {
                name: s.into(),
                consumer: format!("c{}", rng.below(2)),
            }
            .into(),
            2 => tag(rng, Tagged::Stream(s.into())),
            _ => streams::CollectStream { sid: rng.below(4) }.into(),
        },
        25 => Command::CreateTopic(
            CreateTopic::new(t, BTreeMap::new(), BTreeMap::new()).expect("valid topic"),
        ),
        26 => {
            let (protocol, endpoint) = if rng.chance(30) {
                (
                    Protocol::Https,
                    format!("https://hooks.example.com/{}", rng.below(3)),
                )
            } else {
                (Protocol::Sqs, format!("{ARN}{}", rng.pick(&QUEUES)))
            };
            Command::Subscribe(Subscribe {
                topic: t.into(),
                protocol,
                endpoint: normalize_endpoint(protocol, &endpoint).expect("valid endpoint"),
                attributes: BTreeMap::new(),
                id: format!("sub{n}"),
                token: format!("tok{n}"),
            })
        }
        27 => match mem.subscriptions.get(t).and_then(|s| s.first().cloned()) {
            Some(id) if rng.chance(30) => topics::Unsubscribe {
                topic: t.into(),
                id,
            }
            .into(),
            Some(id) if rng.chance(30) => topics::SetSubscriptionAttribute {
                topic: t.into(),
                id,
                attribute: "RawMessageDelivery".into(),
                value: rng.chance(50).to_string(),
            }
            .into(),
            _ if rng.chance(20) => topics::ConfirmSubscription {
                topic: t.into(),
                token: format!("tok{}", rng.below(n)),
            }
            .into(),
            _ => topics::TopicTick { topic: t.into() }.into(),
        },
        28 | 29 => topics::Publish {
            topic: t.into(),
            topic_arn: format!("arn:aws:sns:us-east-1:000000000000:{t}"),
            messages: vec![Publication::validate(
                "",
                false,
                PublishInput {
                    message: format!("p{n}"),
                    ..Default::default()
                },
            )
            .expect("valid publication")],
        }
        .into(),
        30 => match rng.below(3) {
            0 if rng.chance(30) => topics::DeleteTopic { name: t.into() }.into(),
            1 => topics::CollectTopic { tid: rng.below(4) }.into(),

            2 if rng.chance(40) => topics::SetTopicAttribute {
                name: t.into(),
                attribute: "DisplayName".into(),
                value: format!("d{}", rng.below(3)),
            }
            .into(),
            _ => tag(rng, Tagged::Topic(t.into())),
        },
        31 => Command::CreateFunction(crate::testing::new_function(f)),
        32 if rng.chance(10) => functions::DeleteFunction { name: f.into() }.into(),
        32 if rng.chance(20) => functions::DeleteAlias {
            name: f.into(),
            alias: "live".into(),
        }
        .into(),
        32 if rng.chance(20) => functions::PutProvisionedConcurrency {
            name: f.into(),
            qualifier: "1".into(),
            requested: rng.chance(50).then(|| rng.below(3) as u32),
        }
        .into(),
        32 => functions::PublishVersion {
            name: f.into(),
            expected_sha256: None,
        }
        .into(),
        33 => functions::EnqueueEvent {
            name: f.into(),
            qualifier: "$LATEST".into(),
            request_id: format!("req{n}"),
            payload: b"{}".to_vec(),
        }
        .into(),
        34 => match mem.events.get(f).and_then(|e| e.first().cloned()) {
            Some((seq, request_id)) => {
                mem.events.get_mut(f).map(|e| e.remove(0));
                functions::SettleEvent {
                    name: f.into(),
                    arns: functions::events::Arns {
                        function: format!("arn:aws:lambda:us-east-1:000000000000:function:{f}"),
                        sns_prefix: "arn:aws:sns:us-east-1:000000000000:".into(),
                    },
                    seq,
                    request_id,
                    outcome: functions::events::RunOutcome::Expired,
                }
                .into()
            }
            None => functions::PutFunctionConcurrency {
                name: f.into(),
                reserved: rng.chance(50).then(|| rng.below(10) as u32),
            }
            .into(),
        },
        36 | 38 => event_bus_command(rng),
        37 => put_events(rng, n),
        _ => queues::QueueTick { queue: q.into() }.into(),
    }
}

/// A random change of event buses, rules and targets.
fn event_bus_command(rng: &mut Rng) -> Command {
    use crate::events::target::{Target, TargetInput};
    let bus = *rng.pick(&BUSES);
    let rule = format!("r{}", rng.below(3));
    let archive = format!("a{}", rng.below(2));
    let replay = format!("p{}", rng.below(3));
    match rng.below(12) {
        0 => crate::events::CreateEventBus {
            name: "b0".into(),
            description: String::new(),
        }
        .into(),
        1 if rng.chance(40) => crate::events::DeleteEventBus { name: bus.into() }.into(),
        1 | 2 => {
            let state = if rng.chance(20) { "DISABLED" } else { "" };
            let pattern = *rng.pick(&PATTERNS);
            Command::PutRule(
                crate::events::NewRule::new(bus, &rule, pattern, state, "").expect("valid rule"),
            )
        }
        3 => crate::events::DeleteRule {
            bus: bus.into(),
            name: rule,
            force: rng.chance(50),
        }
        .into(),
        4 => crate::events::SetRuleState {
            bus: bus.into(),
            name: rule,
            enabled: rng.chance(70),
        }
        .into(),
        8 => {
            let pattern = if rng.chance(50) {
                *rng.pick(&PATTERNS)
            } else {
                ""
            };
            let days = rng.below(2) as i32;
            let a = crate::events::archive::NewArchive::new(&archive, bus, pattern, days, "")
                .expect("valid archive");
            Command::CreateArchive(a)
        }
        9 if rng.chance(30) => crate::events::DeleteArchive { name: archive }.into(),
        9 => crate::events::CollectArchive { id: rng.below(4) }.into(),
        10 if rng.chance(20) => crate::events::CancelReplay { name: replay }.into(),
        10 => Command::StartReplay(crate::events::archive::NewReplay {
            name: replay,
            archive,
            start_ms: 0,
            end_ms: u64::from(u32::MAX) * 1000,
            bus: bus.into(),
            rules: if rng.chance(30) { vec![rule] } else { vec![] },
            origin: crate::events::put::Origin {
                account: "000000000000".into(),
                region: "us-east-1".into(),
            },
        }),
        11 if rng.chance(20) => crate::events::ArchiveTick { name: archive }.into(),
        11 => crate::events::ReplayStep { name: replay }.into(),
        5 if rng.chance(30) => crate::events::RemoveTargets {
            bus: bus.into(),
            rule,
            ids: vec![format!("t{}", rng.below(4))],
        }
        .into(),
        _ => {
            let arn = |service: &str, resource: &str| {
                format!("arn:aws:{service}:us-east-1:000000000000:{resource}")
            };
            let (target_arn, group) = match rng.below(5) {
                0 => (arn("sqs", "f0.fifo"), "g"),
                1 => (
                    arn("kinesis", &format!("stream/{}", rng.pick(&STREAMS))),
                    "",
                ),
                2 => {
                    let topic = *rng.pick(&TOPICS);
                    (arn("sns", topic), "")
                }
                3 => (
                    arn("events", &format!("event-bus/{}", rng.pick(&BUSES))),
                    "",
                ),
                _ => {
                    let queue = *rng.pick(&["q0", "q1"]);
                    (arn("sqs", queue), "")
                }
            };
            // Another bus takes the event itself, never a part of it.
            let to_bus = target_arn.contains(":events:");
            let input = TargetInput {
                id: format!("t{}", rng.below(4)),
                arn: target_arn,
                message_group_id: group.into(),
                input_path: if rng.chance(20) && !to_bus {
                    "$.detail".into()
                } else {
                    String::new()
                },
                dead_letter_arn: if rng.chance(30) {
                    format!("{ARN}dlq")
                } else {
                    String::new()
                },
                retry_policy: (!to_bus && rng.chance(40))
                    .then(|| (Some(rng.below(3) as u32), Some(60 + rng.below(120) as u32))),
                ..Default::default()
            };
            crate::events::PutTargets {
                bus: bus.into(),
                rule,
                targets: vec![Target::new("", input).expect("valid target")],
            }
            .into()
        }
    }
}

/// Random events on a random bus.
fn put_events(rng: &mut Rng, n: u64) -> Command {
    use crate::events::put::{NewEvent, Origin};
    let bus = *rng.pick(&BUSES);
    let entries = (0..1 + rng.below(3))
        .map(|i| {
            let source = *rng.pick(&["app", "ops", "other"]);
            let detail_type = *rng.pick(&["created", "deleted", "moved"]);
            let detail = format!("{{\"n\": {}, \"i\": {}}}", rng.below(5), n * 10 + i);
            NewEvent::new("", source.into(), detail_type.into(), detail, vec![], None)
                .expect("valid event")
        })
        .collect();
    crate::events::PutEvents {
        bus: bus.into(),
        origin: Origin {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        },
        entries,
    }
    .into()
}

/// Remembers what later commands may refer to.
fn learn(
    mem: &mut Memory,
    cmd: &Command,
    out: &Result<CommandOutput, DomainError>,
    state: &MemState,
) {
    let Ok(out) = out else {
        return;
    };
    match (cmd, out) {
        (
            Command::ReceiveMessages(queues::ReceiveMessages { queue, .. }),
            CommandOutput::ReceiveMessages(r),
        ) => {
            let list = mem.receipts.entry(queue.clone()).or_default();
            list.extend(r.messages.iter().map(|m| m.receipt));
            if list.len() > 20 {
                list.drain(..list.len() - 20);
            }
        }
        (_, CommandOutput::CreateEventSourceMapping(m))
        | (_, CommandOutput::UpdateEventSourceMapping(m))
        | (_, CommandOutput::DeleteEventSourceMapping(m)) => {
            mem.mappings.insert(m.uuid.clone(), m.clone());
        }
        (Command::AssignLeases(mappings::AssignLeases { uuid, .. }), _) => {
            if let Ok(all) = crate::operation::Lookup::read(&mappings::ListLeases, state) {
                if let Some(l) = all.iter().find(|l| &l.uuid == uuid && l.slot == 0) {
                    mem.leases.insert(uuid.clone(), (l.epoch, l.worker.clone()));
                }
            }
        }
        (Command::Subscribe(s), CommandOutput::Subscribe(_)) => {
            mem.subscriptions
                .entry(s.topic.clone())
                .or_default()
                .push(s.id.clone());
        }
        (
            Command::EnqueueEvent(functions::EnqueueEvent {
                name, request_id, ..
            }),
            _,
        ) => {
            if let Ok(Some(f)) = functions::load(state, name) {
                mem.events
                    .entry(name.clone())
                    .or_default()
                    .push((f.event_seq, request_id.clone()));
            }
        }
        _ => {}
    }
    if let Command::SendMessages(queues::SendMessages { queue, .. })
    | Command::PurgeQueue(queues::PurgeQueue { name: queue }) = cmd
    {
        if let Ok(Some(q)) = queues::load(state, queue) {
            let st = queues::layout::load_state(state, q.id).unwrap_or_default();
            mem.queue_ids
                .insert(queue.clone(), (q.id, st.gen.saturating_sub(1)));
        }
    }
}

/// The result of one command, with the effects it had, for comparison.
type Outcome = (Result<CommandOutput, DomainError>, String);

/// Applies `commands`, at `at` in the log, to `state` and commits them.
fn apply_entry(
    state: &mut MemState,
    now_ms: u64,
    at: LogPosition,
    commands: &[Command],
) -> Vec<Outcome> {
    let ctx = Ctx {
        now_ms,
        log: Some(at),
    };
    let mut effects = Effects::default();
    let (results, batch): (_, WriteBatch) = {
        let mut txn = Txn::new(&*state);
        let results = machine::apply_entry(&mut txn, &ctx, commands, &mut effects)
            .expect("the in-memory store does not fail");
        (results, txn.into_batch())
    };
    state.apply(batch);
    let effects = format!("{:?}", effects.drain().collect::<Vec<_>>());
    results.into_iter().map(|r| (r, effects.clone())).collect()
}

/// Every key and value, through the same encoding a snapshot file uses for
/// its pairs, and back into a fresh store.
fn snapshot_and_install(state: &MemState) -> MemState {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = state
        .scan_prefix(b"")
        .collect::<Result<_, _>>()
        .expect("the in-memory store does not fail");
    let bytes = codec::encode(&pairs);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        codec::decode(b"snapshot", &bytes).expect("a snapshot decodes");
    let mut fresh = MemState::default();
    for (k, v) in pairs {
        fresh.insert(k, v);
    }
    fresh
}

/// A hook the planted-bug test uses to damage a command's writes; `None`
/// leaves them alone.
type Tamper = fn(&Command, &mut MemState);

/// Runs one seed for `steps` commands; the error names the seed, the step
/// and what went wrong.
fn run(
    seed: u64,
    steps: u64,
    tamper: Option<Tamper>,
) -> Result<BTreeMap<&'static str, u64>, String> {
    let mut rng = Rng(seed);
    let mut mem = Memory::default();
    let mut single = MemState::default();
    let mut batched = MemState::default();
    let mut installed: Option<MemState> = None;
    let mut now = crate::testing::T0;
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut step = 0;
    let fail = |step: u64, what: String| format!("seed {seed}, step {step}: {what}");
    while step < steps {
        // One log entry: up to 8 commands under one leader time stamp.
        now += rng.below(3_000);
        if rng.chance(2) {
            now += 60_000 * (1 + rng.below(30));
        }
        let size = (1 + rng.below(8)).min(steps - step);
        let mut commands: Vec<Command> = Vec::new();
        while (commands.len() as u64) < size {
            commands.extend(self::commands(&mut rng, &mut mem, &single, now));
        }
        mem.log.push(commands.clone());
        let index = mem.log.len() as u64;
        let mut one_by_one = Vec::new();
        for (i, cmd) in commands.iter().enumerate() {
            *kinds.entry(cmd.name()).or_default() += 1;
            // The same command of the same entry, committed on its own.
            let at = LogPosition {
                index,
                command: i as u32,
            };
            let out = apply_entry(&mut single, now, at, std::slice::from_ref(cmd));
            if let Some(tamper) = tamper {
                tamper(cmd, &mut single);
            }
            step += 1;
            if let Err(e) = machine::check(&single) {
                return Err(fail(step, format!("after {}: {e}", cmd.name())));
            }
            learn(&mut mem, cmd, &out[0].0, &single);
            one_by_one.extend(out);
        }
        let whole = LogPosition { index, command: 0 };
        let together = apply_entry(&mut batched, now, whole, &commands);
        for (i, (a, b)) in one_by_one.iter().zip(&together).enumerate() {
            if a.0 != b.0 {
                return Err(fail(
                    step,
                    format!(
                        "{} gave {:?} alone and {:?} in an entry of {}",
                        commands[i].name(),
                        a.0,
                        b.0,
                        commands.len()
                    ),
                ));
            }
        }
        let mut dangling = None;
        queues::bodies::for_each_logged(&single, |r| {
            if mem.body(&r).is_none() {
                dangling.get_or_insert(r);
            }
        })
        .expect("the in-memory store does not fail");
        if let Some(r) = dangling {
            return Err(fail(
                step,
                format!("{r:?} names no message of a SendMessages command"),
            ));
        }
        if single.pairs() != batched.pairs() {
            return Err(fail(
                step,
                format!(
                "the state differs after an entry of {} commands applied at once and one at a time",
                commands.len()
            ),
            ));
        }
        match &mut installed {
            None if step >= steps / 2 => installed = Some(snapshot_and_install(&batched)),
            None => {}
            Some(copy) => {
                apply_entry(copy, now, whole, &commands);
                if copy.pairs() != single.pairs() {
                    return Err(fail(
                        step,
                        "a snapshot installed midway replays to another state".into(),
                    ));
                }
            }
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds × steps the suite runs (CI runs this test).
    const SEEDS: u64 = 20;
    /// Variants of [`Command`]. A new command fails this
    /// test until the generator makes it.
    const COMMAND_KINDS: usize = 86;
    const STEPS: u64 = 5_000;

    fn seeds() -> Vec<u64> {
        match std::env::var("SLUICE_SIM_SEED") {
            Ok(s) => vec![s.parse().expect("SLUICE_SIM_SEED is a number")],
            Err(_) => (1..=SEEDS).collect(),
        }
    }

    #[test]
    fn the_state_machine_holds_its_invariants_under_random_commands() {
        let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        for seed in seeds() {
            match run(seed, STEPS, None) {
                Ok(k) => {
                    for (name, n) in k {
                        *kinds.entry(name).or_default() += n;
                    }
                }
                Err(e) => panic!(
                    "{e}\nreplay: SLUICE_SIM_SEED={seed} cargo test -p sluice-core simulation"
                ),
            }
        }
        // Every kind of command the state machine has ran, many times.
        assert_eq!(
            kinds.len(),
            COMMAND_KINDS,
            "{} kinds ran: {kinds:?}",
            kinds.len()
        );
        assert!(kinds.values().all(|&n| n >= 5), "{kinds:?}");
    }

    /// A counter update left out (a send that does not count its message as
    /// available) is what the checks are for: the run must fail, and say
    /// which seed reproduces it.
    #[test]
    fn a_counter_update_left_out_is_caught_and_names_its_seed() {
        fn forget_one_available(cmd: &Command, state: &mut MemState) {
            let Command::SendMessages(queues::SendMessages { queue, .. }) = cmd else {
                return;
            };
            let Ok(Some(q)) = queues::load(&*state, queue) else {
                return;
            };
            let key = queues::layout::state_key(q.id);
            let mut st = queues::layout::load_state(&*state, q.id).unwrap();
            if st.available == 0 {
                return;
            }
            st.available -= 1;
            state.insert(
                key,
                codec::encode(&queues::layout::StoredQueueState::V1(st)),
            );
        }
        let err = run(7, 2_000, Some(forget_one_available)).unwrap_err();
        assert!(err.starts_with("seed 7, step "), "{err}");
        assert!(
            err.contains("counters (available, delayed, in flight, leaving)"),
            "{err}"
        );
    }
}
