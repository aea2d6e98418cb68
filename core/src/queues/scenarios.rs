//! The queue rules of the spec, exercised through the state machine's own
//! entry point ([`machine::apply`]) over an in-memory store, with the clock
//! moved by hand.

use std::collections::BTreeMap;

use crate::apply::{Ctx, Effect, Effects};
use crate::command::Command;
use crate::error::{DomainError, ErrorKind};
use crate::machine;
use crate::queues::delivery::{ReceiveRequest, Received, SentMessage};
use crate::queues::housekeeping;
use crate::queues::layout::{MoveStatus, MoveTask, QueueState};
use crate::queues::message::{AttributeValue, NewMessage, Outgoing};
use crate::queues::receipt::Receipt;
use crate::queues::CreateQueue;
use crate::store::StateRead;

use crate::testing::{map, World, T0};

impl World {
    fn create(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let cmd = CreateQueue::new(name, &map(attrs), BTreeMap::new()).unwrap();
        self.run(cmd).unwrap();
    }

    /// Sends a batch; an error when the command fails whole.
    fn try_send_all(
        &mut self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Result<SentMessage, DomainError>>, DomainError> {
        self.run(crate::queues::SendMessages {
            queue: queue.into(),
            messages,
        })
    }

    fn send_all(
        &mut self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<SentMessage, DomainError>> {
        self.try_send_all(queue, messages).unwrap()
    }

    fn send(&mut self, queue: &str, m: NewMessage) -> SentMessage {
        self.send_all(queue, vec![m]).pop().unwrap().unwrap()
    }

    fn receive_with(&mut self, queue: &str, req: ReceiveRequest) -> Vec<Received> {
        self.run(crate::queues::ReceiveMessages {
            queue: queue.into(),
            request: req,
        })
        .unwrap()
        .messages
    }

    fn receive(&mut self, queue: &str, max: u32, vt: Option<u32>) -> Vec<Received> {
        self.receive_with(
            queue,
            ReceiveRequest {
                max,
                visibility_timeout: vt,
                attempt_id: None,
            },
        )
    }

    fn bodies(&mut self, queue: &str, max: u32, vt: Option<u32>) -> Vec<String> {
        self.receive(queue, max, vt)
            .into_iter()
            .map(|r| r.body.body.inline().unwrap().to_string())
            .collect()
    }

    fn delete(&mut self, queue: &str, handle: &Receipt) -> Result<(), DomainError> {
        let r = *handle;
        (self.run(crate::queues::DeleteMessages {
            queue: queue.into(),
            receipts: vec![r],
        })?)
        .pop()
        .unwrap()
    }

    fn change(&mut self, queue: &str, handle: &Receipt, seconds: u32) -> Result<(), DomainError> {
        let r = *handle;
        (self.run(crate::queues::ChangeVisibility {
            queue: queue.into(),
            changes: vec![(r, seconds)],
        })?)
        .pop()
        .unwrap()
    }

    fn counts(&self, queue: &str) -> QueueState {
        self.ask(crate::queues::QueueDetails { name: queue.into() })
            .unwrap()
            .1
    }

    fn tick(&mut self, queue: &str) -> housekeeping::Tick {
        self.run(crate::queues::QueueTick {
            queue: queue.into(),
        })
        .unwrap()
    }

    /// Collects every purged generation and deleted queue, step by step.
    fn collect_all(&mut self) {
        for g in housekeeping::garbage(&self.state, 10).unwrap() {
            while !self
                .run(crate::queues::CollectGarbage {
                    qid: g.qid,
                    gen: g.gen,
                })
                .unwrap()
            {}
        }
    }

    /// Starts a move task on dead-letter queue `dlq`, back to the sources.
    fn start_move_task(&mut self, dlq: &str) -> Result<String, DomainError> {
        self.run(crate::queues::StartMoveTask {
            queue: dlq.into(),
            destination: None,
            rate: None,
        })
    }

    /// Runs one step of `queue`'s move task.
    fn move_task_step(&mut self, queue: &str) {
        self.run(crate::queues::MoveTaskStep {
            queue: queue.into(),
        })
        .unwrap();
    }

    /// The move tasks of `queue`, newest first.
    fn move_tasks(&self, queue: &str) -> Vec<MoveTask> {
        let qid = crate::queues::require(&self.state, queue).unwrap().id;
        crate::queues::redrive::tasks(&self.state, qid).unwrap()
    }

    /// Runs the leader's housekeeping for `queue` as the housekeeper would:
    /// moves its outbox to the destinations.
    fn move_outbox(&mut self, queue: &str) -> u32 {
        let needs = housekeeping::needs(&self.state, queue, self.now, 100).unwrap();
        let mut accepted = 0;
        let mut by_dest: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (gen, seq, entry) in needs.outbox {
            by_dest.entry(entry.destination.clone()).or_default().push((
                gen,
                seq,
                self.carried(entry.message),
            ));
        }
        for (dest, entries) in by_dest {
            let gen = entries[0].0;
            let seqs = entries.iter().map(|e| e.1).collect();
            let messages = entries.into_iter().map(|(_, s, m)| (s, m)).collect();
            accepted += self
                .run(crate::queues::AcceptMoved {
                    queue: dest,
                    from: needs.qid,
                    messages,
                })
                .unwrap();
            self.run(crate::queues::AcknowledgeMoved {
                queue: queue.into(),
                gen,
                seqs,
            })
            .unwrap();
        }
        accepted
    }
}

/// The attribute that makes a queue (named `*.fifo`) a FIFO one.
const FIFO: (&str, &str) = ("FifoQueue", "true");

/// A world with one queue, `name`, created with `attrs`.
fn with_queue(name: &str, attrs: &[(&str, &str)]) -> World {
    let mut w = World::new();
    w.create(name, attrs);
    w
}

/// A valid message to send on its own (not in a batch).
fn valid(fifo: bool, m: Outgoing) -> NewMessage {
    NewMessage::validate("", fifo, m).unwrap()
}

fn msg(body: &str) -> NewMessage {
    valid(
        false,
        Outgoing {
            body: body.into(),
            ..Outgoing::default()
        },
    )
}

fn delayed(body: &str, seconds: i32) -> NewMessage {
    valid(
        false,
        Outgoing {
            body: body.into(),
            delay_seconds: Some(seconds),
            ..Outgoing::default()
        },
    )
}

fn fifo(body: &str, group: &str, dedup: Option<&str>) -> NewMessage {
    valid(
        true,
        Outgoing {
            body: body.into(),
            group_id: group.into(),
            dedup_id: dedup.unwrap_or_default().into(),
            ..Outgoing::default()
        },
    )
}

/// A message with body "b" and these message attributes.
fn with_attributes(attributes: BTreeMap<String, AttributeValue>) -> Outgoing {
    Outgoing {
        body: "b".into(),
        attributes,
        ..Outgoing::default()
    }
}

/// A string-typed message attribute value.
fn string_value(data_type: &str, value: String) -> AttributeValue {
    AttributeValue {
        data_type: data_type.into(),
        string_value: Some(value),
        binary_value: None,
    }
}

// ---- standard queues -------------------------------------------------------

#[test]
fn a_received_message_is_hidden_for_its_visibility_timeout_then_returns() {
    let mut w = with_queue("q", &[("VisibilityTimeout", "30")]);
    w.send("q", msg("a"));
    let first = w.receive("q", 1, None);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].head.receive_count, 1);
    assert_eq!(first[0].head.first_receive_ms, Some(T0));
    assert!(w.receive("q", 1, None).is_empty(), "hidden while in flight");
    w.advance(29);
    assert!(w.receive("q", 1, None).is_empty());
    w.advance(1);
    let second = w.receive("q", 1, None);
    assert_eq!(second.len(), 1, "visible again after 30 s");
    assert_eq!(second[0].head.receive_count, 2);
    assert_eq!(
        second[0].head.first_receive_ms,
        Some(T0),
        "first receive stays"
    );
    assert_ne!(first[0].receipt, second[0].receipt);
}

#[test]
fn zero_visibility_returns_the_message_to_the_next_receive_not_the_same_one() {
    let mut w = with_queue("q", &[]);
    w.send("q", msg("a"));
    w.send("q", msg("b"));
    let got = w.bodies("q", 10, Some(0));
    assert_eq!(got, ["a", "b"], "each once in one receive");
    let again = w.receive("q", 10, Some(0));
    assert_eq!(again.len(), 2, "visible again at once");
    assert!(again.iter().all(|r| r.head.receive_count == 2));
}

#[test]
fn a_stale_receipt_handle_never_deletes_a_message_received_again_since() {
    let mut w = with_queue("q", &[("VisibilityTimeout", "10")]);
    w.send("q", msg("a"));
    let old = w.receive("q", 1, None).remove(0).receipt;
    w.advance(10);
    let new = w.receive("q", 1, None).remove(0).receipt;
    // Accepted as in SQS, but the message stays.
    w.delete("q", &old).unwrap();
    assert_eq!(w.counts("q").in_flight, 1);
    w.advance(10);
    assert_eq!(w.bodies("q", 1, None), ["a"]);
    // The latest handle deletes; deleting twice is fine.
    let latest = {
        w.advance(10);
        w.receive("q", 1, None).remove(0).receipt
    };
    assert_ne!(latest, new);
    w.delete("q", &latest).unwrap();
    w.delete("q", &latest).unwrap();
    w.advance(100);
    assert!(w.receive("q", 1, None).is_empty());
    let c = w.counts("q");
    assert_eq!((c.available, c.in_flight, c.delayed), (0, 0, 0));
}

#[test]
fn a_handle_for_another_queue_is_invalid() {
    let mut w = with_queue("a", &[]);
    w.create("b", &[]);
    w.send("a", msg("x"));
    let h = w.receive("a", 1, None).remove(0).receipt;
    let err = w.delete("b", &h).unwrap_err();
    assert_eq!(err.code, "ReceiptHandleIsInvalid");
}

#[test]
fn change_visibility_extends_shortens_and_needs_the_latest_in_flight_handle() {
    let mut w = with_queue("q", &[("VisibilityTimeout", "30")]);
    w.send("q", msg("a"));
    let h = w.receive("q", 1, None).remove(0).receipt;
    w.change("q", &h, 120).unwrap();
    w.advance(60);
    assert!(w.receive("q", 1, None).is_empty(), "extended to 120 s");
    let ready = w.ready("q");
    w.change("q", &h, 0).unwrap();
    assert_eq!(w.ready("q"), ready + 1, "one long poll woken");
    let again = w.receive("q", 1, None);
    assert_eq!(again.len(), 1, "visible at once after a change to 0");
    // The old handle is stale now.
    let err = w.change("q", &h, 10).unwrap_err();
    assert_eq!(err.code, "MessageNotInflight");
    // A message that is not in flight cannot be changed.
    let latest = again[0].receipt;
    w.change("q", &latest, 0).unwrap();
    w.receive("q", 1, Some(0)); // promote and take it again...
    w.advance(1);
    let err = w.change("q", &latest, 5).unwrap_err();
    assert_eq!(err.code, "MessageNotInflight");
}

#[test]
fn queue_and_message_delays_hold_messages_back() {
    let mut w = with_queue("q", &[("DelaySeconds", "10")]);
    w.send("q", msg("queue-delay"));
    w.send("q", delayed("own-delay", 3));
    w.send("q", delayed("no-delay", 0));
    assert_eq!(w.bodies("q", 10, None), ["no-delay"]);
    let c = w.counts("q");
    assert_eq!(c.delayed, 2);
    w.advance(3);
    assert_eq!(w.bodies("q", 10, None), ["own-delay"]);
    w.advance(7);
    assert_eq!(w.bodies("q", 10, None), ["queue-delay"]);
}

#[test]
fn delay_and_visibility_add_up() {
    let mut w = with_queue("q", &[]);
    w.send("q", delayed("a", 10));
    w.advance(9);
    assert!(w.receive("q", 1, Some(5)).is_empty());
    w.advance(1);
    assert_eq!(w.receive("q", 1, Some(5)).len(), 1, "delay over at 10 s");
    w.advance(4);
    assert!(w.receive("q", 1, Some(5)).is_empty(), "hidden until 15 s");
    w.advance(1);
    assert_eq!(w.receive("q", 1, Some(5)).len(), 1);
}

#[test]
fn messages_past_retention_are_dropped() {
    let mut w = with_queue("q", &[("MessageRetentionPeriod", "60")]);
    w.send("q", msg("old"));
    w.advance(30);
    w.send("q", msg("young"));
    w.advance(30);
    // "old" is 60 s old: gone at receive time, "young" remains.
    assert_eq!(w.bodies("q", 10, None), ["young"]);
    w.advance(30);
    let t = w.tick("q");
    assert_eq!(
        t.expired, 1,
        "the tick drops the in-flight one past retention"
    );
    let c = w.counts("q");
    assert_eq!((c.available, c.in_flight), (0, 0));
}

#[test]
fn approximate_counts_follow_the_messages() {
    let mut w = with_queue("q", &[]);
    for i in 0..5 {
        w.send("q", msg(&format!("m{i}")));
    }
    w.send("q", delayed("later", 60));
    let c = w.counts("q");
    assert_eq!((c.available, c.in_flight, c.delayed), (5, 0, 1));
    let got = w.receive("q", 2, Some(30));
    let c = w.counts("q");
    assert_eq!((c.available, c.in_flight, c.delayed), (3, 2, 1));
    w.delete("q", &got[0].receipt).unwrap();
    w.advance(60);
    // Hidden messages count as visible once a tick (or receive) promotes them.
    w.tick("q");
    let c = w.counts("q");
    assert_eq!((c.available, c.in_flight, c.delayed), (5, 0, 0));
}

#[test]
fn an_oversize_message_fails_alone_in_its_batch() {
    let mut w = with_queue("small", &[("MaximumMessageSize", "1024")]);
    let results = w.send_all(
        "small",
        vec![msg("fits"), msg(&"x".repeat(1025)), msg("fits too")],
    );
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.field.as_deref(), Some("message_body"));
    assert!(
        err.message.contains("MaximumMessageSize is 1024"),
        "{}",
        err.message
    );
    assert!(results[2].is_ok());
    assert_eq!(w.counts("small").available, 2);
}

#[test]
fn message_attributes_count_toward_the_size_and_are_returned() {
    let mut w = with_queue("q", &[("MaximumMessageSize", "1024")]);
    let big = BTreeMap::from([("big".to_string(), string_value("String", "v".repeat(1020)))]);
    let m = valid(false, with_attributes(big));
    assert!(w.send_all("q", vec![m]).remove(0).is_err());
    let attrs = BTreeMap::from([("n".to_string(), string_value("Number", "42".into()))]);
    let sent = w.send("q", valid(false, with_attributes(attrs.clone())));
    assert!(sent.md5_of_attributes.is_some());
    let got = w.receive("q", 1, None).remove(0);
    assert_eq!(got.body.attributes, attrs);
    assert_eq!(got.body.md5_of_attributes, sent.md5_of_attributes);
}

#[test]
fn invalid_messages_are_refused_naming_the_field() {
    /// The refusal of batch entry 2, a message with body "x" but for `edit`.
    fn bad(fifo: bool, edit: impl FnOnce(&mut Outgoing)) -> DomainError {
        let mut o = Outgoing {
            body: "x".into(),
            ..Outgoing::default()
        };
        edit(&mut o);
        NewMessage::validate("entries[2]", fifo, o).unwrap_err()
    }
    let e = bad(false, |o| o.body.clear());
    assert_eq!(e.field.as_deref(), Some("entries[2].message_body"));
    let e = bad(false, |o| o.delay_seconds = Some(901));
    assert!(e.message.contains("0 to 900"));
    let e = bad(true, |o| {
        o.delay_seconds = Some(5);
        o.group_id = "g".into();
    });
    assert_eq!(e.field.as_deref(), Some("entries[2].delay_seconds"));
    let e = bad(true, |_| {});
    assert_eq!(e.code, "MissingParameter");
    let e = bad(false, |o| o.dedup_id = "d".into());
    assert_eq!(
        e.field.as_deref(),
        Some("entries[2].message_deduplication_id")
    );
    let too_many: BTreeMap<String, AttributeValue> = (0..11)
        .map(|i| (format!("a{i}"), string_value("String", "v".into())))
        .collect();
    let e = bad(false, |o| o.attributes = too_many);
    assert!(e.message.contains("at most 10"));
    let e = bad(false, |o| o.body = "x".repeat(1_048_577));
    assert!(e.message.contains("at most 1048576"));
}

#[test]
fn sending_to_a_missing_queue_fails_whole() {
    let mut w = World::new();
    let err = w.try_send_all("nope", vec![msg("a")]).unwrap_err();
    assert_eq!(err.code, "QueueDoesNotExist");
    assert_eq!(err.kind, ErrorKind::NotFound);
}

// ---- dead-letter queues ------------------------------------------------------

fn redrive(dlq: &str, max: u32) -> String {
    format!(
        "{{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:{dlq}\",\"maxReceiveCount\":{max}}}"
    )
}

/// A world with queue "src", whose messages go to queue "dlq" once
/// received `max_receives` times.
fn with_dlq(max_receives: u32) -> World {
    let mut w = with_queue("dlq", &[]);
    w.create("src", &[("RedrivePolicy", &redrive("dlq", max_receives))]);
    w
}

/// Sends `bodies` to "src" (of `with_dlq(1)`) and receives them twice, so
/// that they move to "dlq".
fn dead_letter(w: &mut World, bodies: &[&str]) {
    for body in bodies {
        w.send("src", msg(body));
    }
    w.receive("src", 10, Some(0));
    w.receive("src", 10, Some(0));
    w.move_outbox("src");
}

#[test]
fn an_over_received_message_moves_to_the_dlq_keeping_its_identity() {
    let mut w = with_dlq(2);
    let sent = w.send("src", msg("poison"));
    let sent_ms = w.now;
    w.advance(5);
    assert_eq!(w.receive("src", 1, Some(0)).len(), 1);
    assert_eq!(w.receive("src", 1, Some(0)).len(), 1);
    // Received twice (= maxReceiveCount): the next receive moves it.
    assert!(w.receive("src", 1, Some(0)).is_empty());
    let c = w.counts("src");
    assert_eq!((c.available, c.in_flight, c.leaving), (0, 0, 1));
    assert_eq!(w.move_outbox("src"), 1);
    assert_eq!(w.counts("src").leaving, 0);
    let got = w.receive("dlq", 1, None).remove(0);
    assert_eq!(got.body.message_id, sent.message_id);
    assert_eq!(
        got.head.sent_ms, sent_ms,
        "the original sent timestamp stays"
    );
    assert_eq!(got.body.dead_letter_source.as_deref(), Some("src"));
    assert_eq!(got.head.receive_count, 3);
}

#[test]
fn a_repeated_move_is_taken_once() {
    let mut w = with_dlq(1);
    w.send("src", msg("x"));
    w.receive("src", 1, Some(0));
    w.receive("src", 1, Some(0));
    let needs = housekeeping::needs(&w.state, "src", w.now, 10).unwrap();
    let messages: Vec<_> = needs
        .outbox
        .iter()
        .map(|(_, s, e)| (*s, w.carried(e.message.clone())))
        .collect();
    for _ in 0..2 {
        // A leader change between accept and acknowledge repeats the accept.
        w.run(crate::queues::AcceptMoved {
            queue: "dlq".into(),
            from: needs.qid,
            messages: messages.clone(),
        })
        .unwrap();
    }
    assert_eq!(w.counts("dlq").available, 1);
}

#[test]
fn a_move_task_returns_dead_letters_to_their_source() {
    let mut w = with_dlq(1);
    dead_letter(&mut w, &["m0", "m1", "m2"]);
    assert_eq!(w.counts("dlq").available, 3);
    let handle = w.start_move_task("dlq").unwrap();
    let err = w.start_move_task("dlq").unwrap_err();
    assert_eq!(
        err.code, "UnsupportedOperation",
        "one running task at a time"
    );
    w.move_task_step("dlq");
    assert_eq!(w.move_outbox("dlq"), 3);
    let back = w.receive("src", 10, None);
    assert_eq!(back.len(), 3);
    assert!(
        back.iter().all(|r| r.head.receive_count == 1),
        "counts restart"
    );
    w.move_task_step("dlq");
    let tasks = w.move_tasks("dlq");
    let task = tasks.iter().find(|t| t.handle == handle).unwrap();
    assert_eq!(task.status, MoveStatus::Completed);
    assert_eq!(task.moved, 3);
}

#[test]
fn a_move_task_waits_for_dead_letters_in_flight() {
    let mut w = with_dlq(1);
    dead_letter(&mut w, &["m"]);
    // Someone is looking at the dead letter when the task starts.
    assert_eq!(w.receive("dlq", 1, Some(30)).len(), 1);
    w.start_move_task("dlq").unwrap();
    w.move_task_step("dlq");
    let task = w.move_tasks("dlq").remove(0);
    assert_eq!(
        task.status,
        MoveStatus::Running,
        "still one message to move"
    );
    w.advance(30);
    w.move_task_step("dlq");
    assert_eq!(w.move_outbox("dlq"), 1);
    let task = w.move_tasks("dlq").remove(0);
    assert_eq!((task.status, task.moved), (MoveStatus::Completed, 1));
}

#[test]
fn a_redriven_message_is_a_new_message_whose_retention_restarts() {
    // The source keeps messages 120 s; the dead-letter queue 14 days.
    let mut w = with_queue("dlq", &[]);
    w.create(
        "src",
        &[
            ("RedrivePolicy", &redrive("dlq", 1)),
            ("MessageRetentionPeriod", "120"),
        ],
    );
    let sent = w.send("src", msg("m"));
    let sent_ms = w.now;
    w.receive("src", 10, Some(0));
    w.receive("src", 10, Some(0));
    assert_eq!(w.move_outbox("src"), 1);
    // A dead letter keeps its identity and its sent time.
    let dead = w.receive("dlq", 1, Some(0)).remove(0);
    assert_eq!(dead.body.message_id, sent.message_id);
    assert_eq!(dead.head.sent_ms, sent_ms);
    // 100 s after the first send, a move task takes it back.
    w.advance(100);
    let moved_ms = w.now;
    w.start_move_task("dlq").unwrap();
    w.move_task_step("dlq");
    assert_eq!(w.move_outbox("dlq"), 1);
    // 200 s after the first send the original would be past the source's
    // retention; the redriven message was sent 100 s ago and stays.
    w.advance(100);
    assert_eq!(w.tick("src").expired, 0);
    let back = w.receive("src", 1, Some(0)).remove(0);
    assert_ne!(
        back.body.message_id, sent.message_id,
        "a redriven message gets a new MessageId"
    );
    assert_eq!(back.head.sent_ms, moved_ms, "and a new sent time");
    assert_eq!(back.head.receive_count, 1);
    assert_eq!(back.body.body.inline(), Some("m"));
    // Redriven again, it gets another id, derived the same way on every
    // replica.
    w.receive("src", 1, Some(0));
    assert_eq!(w.move_outbox("src"), 1);
    w.advance(1);
    w.start_move_task("dlq").unwrap();
    w.move_task_step("dlq");
    assert_eq!(w.move_outbox("dlq"), 1);
    let again = w.receive("src", 1, Some(0)).remove(0);
    assert_ne!(again.body.message_id, back.body.message_id);
    assert_ne!(again.body.message_id, sent.message_id);
    // Past its own retention it goes like any message.
    w.advance(120);
    w.tick("src");
    assert_eq!(w.counts("src").in_flight + w.counts("src").available, 0);
}

// ---- FIFO queues ---------------------------------------------------------------

#[test]
fn fifo_delivers_each_group_in_order_and_blocks_it_while_in_flight() {
    let mut w = with_queue("f.fifo", &[FIFO, ("ContentBasedDeduplication", "true")]);
    for (body, group) in [
        ("a1", "A"),
        ("b1", "B"),
        ("a2", "A"),
        ("c1", "C"),
        ("b2", "B"),
        ("a3", "A"),
    ] {
        w.send("f.fifo", fifo(body, group, None));
    }
    // One message per call: the oldest group first, then the others while A
    // is blocked.
    let first = w.receive("f.fifo", 1, Some(30));
    assert_eq!(first[0].body.body.inline(), Some("a1"));
    assert_eq!(w.bodies("f.fifo", 1, Some(30)), ["b1"]);
    assert_eq!(w.bodies("f.fifo", 1, Some(30)), ["c1"]);
    assert!(
        w.receive("f.fifo", 10, Some(30)).is_empty(),
        "every group blocked"
    );
    // Deleting a1 unblocks A at a2: one group's head, one long poll woken.
    let ready = w.ready("f.fifo");
    w.delete("f.fifo", &first[0].receipt).unwrap();
    assert_eq!(w.ready("f.fifo"), ready + 1);
    assert_eq!(w.bodies("f.fifo", 10, Some(30)), ["a2", "a3"]);
}

#[test]
fn a_send_wakes_as_many_long_polls_as_it_made_messages_receivable() {
    let mut w = with_queue("q", &[]);
    w.send_all("q", vec![msg("a"), msg("b"), msg("c"), delayed("d", 5)]);
    // One effect for the batch, counting the three visible messages (the
    // delayed one wakes nobody until it comes due).
    let ready: Vec<_> = w
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::QueueReady { .. }))
        .collect();
    assert_eq!(
        ready,
        [&Effect::QueueReady {
            queue: "q".into(),
            messages: 3
        }]
    );
    assert_eq!(w.receive("q", 10, Some(30)).len(), 3);
    let before = w.ready("q");
    assert!(w.receive("q", 10, Some(30)).is_empty());
    assert_eq!(w.ready("q"), before, "an empty receive wakes nobody");
    // The delayed message comes due and is promoted by a receive that
    // takes it: nothing is left for another long poll.
    w.advance(5);
    assert_eq!(w.bodies("q", 1, Some(30)), ["d"]);
    assert_eq!(w.ready("q"), before);
    // Three visibility timeouts run out; the housekeeping tick promotes
    // them and wakes three.
    w.advance(30);
    w.tick("q");
    assert_eq!(w.ready("q"), before + 4, "three returned, and d");
}

#[test]
fn fifo_returns_an_expired_message_before_the_rest_of_its_group() {
    let mut w = with_queue("f.fifo", &[FIFO, ("ContentBasedDeduplication", "true")]);
    for body in ["1", "2", "3"] {
        w.send("f.fifo", fifo(body, "g", None));
    }
    assert_eq!(w.bodies("f.fifo", 2, Some(10)), ["1", "2"]);
    w.advance(10);
    let again = w.receive("f.fifo", 10, Some(10));
    let bodies: Vec<_> = again
        .iter()
        .map(|r| r.body.body.inline().unwrap())
        .collect();
    assert_eq!(bodies, ["1", "2", "3"]);
    assert_eq!(again[0].head.receive_count, 2);
    assert!(again
        .windows(2)
        .all(|w| w[0].sequence_number < w[1].sequence_number));
}

#[test]
fn fifo_deduplicates_within_five_minutes_by_id_or_content() {
    let mut w = with_queue("ids.fifo", &[FIFO]);
    let a = w.send("ids.fifo", fifo("x", "g", Some("d1")));
    let dup = w.send("ids.fifo", fifo("other body", "g", Some("d1")));
    assert_eq!(
        a.message_id, dup.message_id,
        "a duplicate gets the first id"
    );
    assert_eq!(a.sequence_number, dup.sequence_number);
    assert_eq!(w.counts("ids.fifo").available, 1);
    w.advance(299);
    w.send("ids.fifo", fifo("x", "g", Some("d1")));
    assert_eq!(w.counts("ids.fifo").available, 1, "still inside the window");
    w.advance(1);
    let later = w.send("ids.fifo", fifo("x", "g", Some("d1")));
    assert_ne!(later.message_id, a.message_id, "the window has passed");
    assert_eq!(w.counts("ids.fifo").available, 2);

    w.create(
        "content.fifo",
        &[FIFO, ("ContentBasedDeduplication", "true")],
    );
    w.send("content.fifo", fifo("same", "g", None));
    w.send("content.fifo", fifo("same", "h", None));
    w.send("content.fifo", fifo("different", "g", None));
    assert_eq!(w.counts("content.fifo").available, 2);

    w.create("nodedup.fifo", &[FIFO]);
    let err = w
        .send_all("nodedup.fifo", vec![fifo("x", "g", None)])
        .remove(0)
        .unwrap_err();
    assert_eq!(err.code, "MissingParameter");
    assert_eq!(err.field.as_deref(), Some("message_deduplication_id"));
}

#[test]
fn fifo_dedup_scope_can_be_per_group() {
    let mut w = with_queue(
        "hi.fifo",
        &[
            FIFO,
            ("DeduplicationScope", "messageGroup"),
            ("FifoThroughputLimit", "perMessageGroupId"),
        ],
    );
    w.send("hi.fifo", fifo("x", "g1", Some("same")));
    w.send("hi.fifo", fifo("x", "g2", Some("same")));
    w.send("hi.fifo", fifo("x", "g2", Some("same")));
    assert_eq!(w.counts("hi.fifo").available, 2);
}

#[test]
fn fifo_dedup_entries_are_forgotten_by_the_tick() {
    let mut w = with_queue("f.fifo", &[FIFO]);
    w.send("f.fifo", fifo("x", "g", Some("d")));
    let before = w.state.len();
    w.advance(301);
    let t = w.tick("f.fifo");
    assert_eq!(t.forgotten, 1);
    assert_eq!(w.state.len(), before - 2, "entry and its expiry index gone");
}

#[test]
fn a_repeated_fifo_receive_attempt_returns_the_same_messages() {
    let mut w = with_queue("f.fifo", &[FIFO, ("ContentBasedDeduplication", "true")]);
    w.send("f.fifo", fifo("1", "g", None));
    w.send("f.fifo", fifo("2", "h", None));
    let req = ReceiveRequest {
        max: 1,
        visibility_timeout: Some(30),
        attempt_id: Some("try-1".into()),
    };
    let first = w.receive_with("f.fifo", req.clone());
    let retry = w.receive_with("f.fifo", req.clone());
    assert_eq!(first, retry, "same messages, same handles");
    let fresh = w.receive_with(
        "f.fifo",
        ReceiveRequest {
            attempt_id: Some("try-2".into()),
            ..req
        },
    );
    assert_ne!(fresh[0].body.body, first[0].body.body);
}

#[test]
fn a_fifo_receive_attempt_that_found_nothing_finds_messages_sent_since() {
    // A long poll retries its receive with the same attempt id while it
    // waits; an empty first look must not be replayed.
    let mut w = with_queue("f.fifo", &[FIFO, ("ContentBasedDeduplication", "true")]);
    let req = ReceiveRequest {
        max: 1,
        visibility_timeout: Some(30),
        attempt_id: Some("waiting".into()),
    };
    assert!(w.receive_with("f.fifo", req.clone()).is_empty());
    w.send("f.fifo", fifo("1", "g", None));
    let got = w.receive_with("f.fifo", req.clone());
    assert_eq!(got.len(), 1);
    assert_eq!(w.receive_with("f.fifo", req), got, "now it is replayed");
}

#[test]
fn fifo_dlq_moves_keep_the_group() {
    let mut w = with_queue("dlq.fifo", &[FIFO, ("ContentBasedDeduplication", "true")]);
    w.create(
        "src.fifo",
        &[
            FIFO,
            ("ContentBasedDeduplication", "true"),
            ("RedrivePolicy", &redrive("dlq.fifo", 1)),
        ],
    );
    w.send("src.fifo", fifo("bad", "g", None));
    w.send("src.fifo", fifo("next", "g", None));
    assert_eq!(w.bodies("src.fifo", 1, Some(0)), ["bad"]);
    // "bad" goes to the DLQ; the group goes on with "next".
    assert_eq!(w.bodies("src.fifo", 1, Some(30)), ["next"]);
    w.move_outbox("src.fifo");
    let moved = w.receive("dlq.fifo", 1, None).remove(0);
    assert_eq!(moved.body.body.inline(), Some("bad"));
    assert_eq!(moved.head.group_id.as_deref(), Some("g"));
}

// ---- purge, delete, collection ----------------------------------------------------

#[test]
fn purge_empties_the_queue_once_a_minute_and_old_handles_do_nothing() {
    let mut w = with_queue("q", &[]);
    for i in 0..5 {
        w.send("q", msg(&format!("m{i}")));
    }
    let h = w.receive("q", 1, None).remove(0).receipt;
    let empty_size = with_queue("q", &[]).state.len();
    w.run(crate::queues::PurgeQueue { name: "q".into() })
        .unwrap();
    let c = w.counts("q");
    assert_eq!((c.available, c.in_flight, c.delayed), (0, 0, 0));
    assert!(w.receive("q", 10, None).is_empty());
    w.delete("q", &h).unwrap();
    let err = w
        .run(crate::queues::PurgeQueue { name: "q".into() })
        .unwrap_err();
    assert_eq!(err.code, "PurgeQueueInProgress");
    w.advance(60);
    w.run(crate::queues::PurgeQueue { name: "q".into() })
        .unwrap();
    // New messages go to the new generation.
    w.send("q", msg("fresh"));
    assert_eq!(w.bodies("q", 10, None), ["fresh"]);
    // The old generations are collected in bounded steps.
    w.collect_all();
    assert!(housekeeping::garbage(&w.state, 10).unwrap().is_empty());
    // Left: the queue record and state, and the one fresh message's keys.
    assert!(w.state.len() <= empty_size + 5, "{} keys", w.state.len());
}

#[test]
fn a_deleted_queue_is_collected_and_its_name_starts_afresh() {
    let mut w = with_queue("q", &[]);
    for i in 0..3 {
        w.send("q", msg(&format!("m{i}")));
    }
    w.run(crate::queues::DeleteQueue { name: "q".into() })
        .unwrap();
    let err = w.try_send_all("q", vec![msg("x")]).unwrap_err();
    assert_eq!(err.code, "QueueDoesNotExist");
    assert!(housekeeping::garbage(&w.state, 10)
        .unwrap()
        .iter()
        .all(|g| g.whole_queue));
    w.collect_all();
    let leftover: Vec<String> = w
        .state
        .scan_prefix(b"")
        .map(|kv| crate::store::keys::display(&kv.unwrap().0))
        .filter(|k| !k.starts_with("seq/"))
        .collect();
    assert!(leftover.is_empty(), "left behind: {leftover:?}");
    w.create("q", &[]);
    assert!(w.receive("q", 10, None).is_empty());
}

// ---- cost -------------------------------------------------------------------------

/// Counts what is read through it.
struct Counting<'a> {
    inner: &'a dyn StateRead,
    reads: std::cell::Cell<usize>,
}

impl StateRead for Counting<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.get(key)
    }

    fn range(
        &self,
        start: std::ops::Bound<Vec<u8>>,
        end: std::ops::Bound<Vec<u8>>,
        reverse: bool,
    ) -> crate::store::KvIter<'_> {
        Box::new(self.inner.range(start, end, reverse).inspect(|_| {
            self.reads.set(self.reads.get() + 1);
        }))
    }
}

/// Store reads of one receive (and of one send) on a queue `depth` deep.
fn reads_at_depth(fifo_queue: bool, depth: usize) -> (usize, usize) {
    let mut w = World::new();
    let name = if fifo_queue { "d.fifo" } else { "d" };
    w.create(
        name,
        &[FIFO, ("ContentBasedDeduplication", "true")][..2 * usize::from(fifo_queue)],
    );
    w.check_invariants = false;
    for chunk in (0..depth).collect::<Vec<_>>().chunks(100) {
        let batch = chunk
            .iter()
            .map(|i| {
                if fifo_queue {
                    // Same shape at every depth: two groups.
                    fifo(&format!("m{i}"), &format!("g{}", i % 2), None)
                } else {
                    msg(&format!("m{i}"))
                }
            })
            .collect();
        w.send_all(name, batch);
    }
    w.check_invariants = true;
    // Some in flight too, with timers in the due index.
    w.receive(name, 10, Some(3600));
    let count = |w: &World, cmd: Command| {
        let counting = Counting {
            inner: &w.state,
            reads: std::cell::Cell::new(0),
        };
        let mut txn = crate::store::Txn::new(&counting);
        let mut effects = Effects::default();
        machine::apply(&mut txn, &Ctx::at(w.now), &cmd, &mut effects).unwrap();
        counting.reads.get()
    };
    let receive = count(
        &w,
        Command::ReceiveMessages(crate::queues::ReceiveMessages {
            queue: name.into(),
            request: ReceiveRequest {
                max: 10,
                visibility_timeout: Some(30),
                attempt_id: None,
            },
        }),
    );
    let send = count(
        &w,
        Command::SendMessages(crate::queues::SendMessages {
            queue: name.into(),
            messages: vec![if fifo_queue {
                fifo("new", "g0", None)
            } else {
                msg("new")
            }],
        }),
    );
    (receive, send)
}

#[test]
fn receive_and_send_cost_the_same_at_any_depth() {
    for fifo_queue in [false, true] {
        let shallow = reads_at_depth(fifo_queue, 10 + 10);
        let deep = reads_at_depth(fifo_queue, 20_000);
        assert_eq!(
            shallow, deep,
            "store reads (receive, send) at depth 20 vs 20 000, fifo={fifo_queue}"
        );
    }
}
