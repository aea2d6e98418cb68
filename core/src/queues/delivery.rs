//! Sending, receiving, deleting and hiding messages; purging; expiry.
//!
//! Each operation touches only the keys of the messages it handles, plus a
//! bounded number of due timers it promotes on the way: the cost of a receive
//! does not grow with the depth of the queue. Time is the state machine's
//! clock (`ctx.now_ms`): a message is visible once its `due` time has come,
//! and the receive (or the leader's periodic tick) that finds it due makes
//! it receivable again.

use serde::{Deserialize, Serialize};

use super::attributes::{DedupScope, QueueAttributes};
use super::fifo;
use super::layout::{
    gc_key, load_body, load_head, load_state, save_head, save_state, Attempt, Body, BodyRef,
    BodyText, Dedup, Head, Keys, Outbox, QueueState, Visibility,
};
use super::message::{self, NewMessage};
use super::receipt::Receipt;
use super::{require, Queue};
use crate::apply::{Ctx, Effects, LogPosition};
use crate::error::{ApplyResult, DomainError};
use crate::invariant::decrement;
use crate::store::keys::read_u64;
use crate::store::{StateRead, Txn};

/// FIFO deduplication window.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
/// How long a FIFO receive attempt id is remembered.
pub const ATTEMPT_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Due timers a receive promotes on its way (the tick promotes more).
pub const PROMOTE_ON_RECEIVE: usize = 256;
/// Candidates a receive looks at beyond what it returns (expired or
/// dead-lettered messages it clears on the way).
pub const SCAN_SLACK: usize = 100;
/// Minimum time between purges.
pub const PURGE_INTERVAL_MS: u64 = 60_000;

/// A queue opened for an operation: its record, state and keys.
pub struct Open {
    /// The queue's record.
    pub queue: Queue,
    /// Its message state.
    pub state: QueueState,
    /// Keys of its current generation.
    pub keys: Keys,
}

impl Open {
    /// Opens the queue called `name`.
    pub fn new(txn: &dyn StateRead, name: &str) -> ApplyResult<Open> {
        let queue = require(txn, name)?;
        let state = load_state(txn, queue.id)?;
        let keys = Keys {
            qid: queue.id,
            gen: state.gen,
        };
        Ok(Open { queue, state, keys })
    }

    /// Writes the state back.
    pub fn close(self, txn: &mut Txn<'_>) {
        save_state(txn, self.queue.id, &self.state);
    }

    fn attrs(&self) -> &QueueAttributes {
        &self.queue.attributes
    }

    fn fifo(&self) -> bool {
        self.queue.attributes.fifo
    }

    fn expired(&self, head: &Head, now: u64) -> bool {
        head.sent_ms + u64::from(self.attrs().retention_period) * 1000 <= now
    }
}

/// What a send returns for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    /// MessageId.
    pub message_id: String,
    /// Hex MD5 of the body.
    pub md5_of_body: String,
    /// Hex MD5 of the message attributes.
    pub md5_of_attributes: Option<String>,
    /// Hex MD5 of the system attributes.
    pub md5_of_system_attributes: Option<String>,
    /// FIFO sequence number.
    pub sequence_number: Option<String>,
}

/// A received message, with everything the API may return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// Sequence number in the queue.
    pub seq: u64,
    /// What this delivery's receipt handle names (the API seals it).
    pub receipt: Receipt,
    /// Content.
    pub body: Body,
    /// State after this receive.
    pub head: Head,
    /// FIFO sequence number.
    pub sequence_number: Option<String>,
}

/// A receive request, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveRequest {
    /// 1-10.
    pub max: u32,
    /// Seconds; `None`: the queue's.
    pub visibility_timeout: Option<u32>,
    /// FIFO receive request attempt id.
    pub attempt_id: Option<String>,
}

/// What a receive returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveOutcome {
    /// The messages.
    pub messages: Vec<Received>,
    /// When none was available: when the next hidden one becomes visible,
    /// for a long poll to wait until.
    pub next_due_ms: Option<u64>,
}

fn sent_result(m: &NewMessage, message_id: String, seq: Option<u64>) -> SentMessage {
    SentMessage {
        message_id,
        md5_of_body: m.md5_of_body.clone(),
        md5_of_attributes: m.md5_of_attributes.clone(),
        md5_of_system_attributes: m.md5_of_system_attributes.clone(),
        sequence_number: seq.map(message::sequence_number),
    }
}

/// Writes a new message and places it where its visibility says.
pub fn insert(txn: &mut Txn<'_>, q: &mut Open, seq: u64, head: Head, body: Body) {
    let k = q.keys;
    txn.put_record(k.head(seq), &super::layout::StoredHead::V1(head.clone()));
    txn.put_record(k.body(seq), &super::layout::StoredBody::V1(body));
    txn.put(k.sent(head.sent_ms, seq), Vec::new());
    match head.visibility {
        Visibility::Available => {
            q.state.available += 1;
            if !q.fifo() {
                txn.put(k.ready(seq), Vec::new());
            }
        }
        Visibility::Delayed(at) => {
            q.state.delayed += 1;
            txn.put(k.due(at, seq), Vec::new());
        }
        Visibility::InFlight(at) => {
            q.state.in_flight += 1;
            txn.put(k.due(at, seq), Vec::new());
        }
    }
    if q.fifo() {
        let group = head.group_id.as_deref().unwrap_or_default();
        txn.put(k.grp(group, seq), Vec::new());
    }
}

/// Removes a message and its index entries; a FIFO caller refreshes the
/// group afterwards.
pub fn remove(txn: &mut Txn<'_>, q: &mut Open, seq: u64, head: &Head) -> ApplyResult<()> {
    let k = q.keys;
    txn.delete(k.head(seq));
    txn.delete(k.body(seq));
    txn.delete(k.sent(head.sent_ms, seq));
    match head.visibility {
        Visibility::Available => {
            decrement(&mut q.state.available, "available");
            if !q.fifo() {
                txn.delete(k.ready(seq));
            }
        }
        Visibility::Delayed(at) => {
            decrement(&mut q.state.delayed, "delayed");
            txn.delete(k.due(at, seq));
        }
        Visibility::InFlight(at) => {
            decrement(&mut q.state.in_flight, "in_flight");
            txn.delete(k.due(at, seq));
        }
    }
    if q.fifo() {
        let group = head.group_id.as_deref().unwrap_or_default();
        txn.delete(k.grp(group, seq));
        if matches!(head.visibility, Visibility::InFlight(_)) {
            fifo::add_in_flight(txn, &k, group, -1)?;
        }
    }
    Ok(())
}

/// Sends messages; each succeeds or fails on its own.
///
/// `logged`: where the command carrying `messages` sits in the log, when it
/// is the SendMessages command there; each body then stays in the log and
/// the state keeps its [`BodyRef`]. `None` (messages the state machine made)
/// keeps the bodies inline.
pub fn send(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    messages: &[NewMessage],
    logged: Option<LogPosition>,
    effects: &mut Effects,
) -> ApplyResult<Vec<Result<SentMessage, DomainError>>> {
    let mut q = Open::new(txn, name)?;
    let available_before = q.state.available;
    let mut results = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let text = match logged {
            Some(at) => BodyText::Logged(BodyRef {
                index: at.index,
                command: at.command,
                message: i as u32,
                bytes: m.body.len() as u32,
            }),
            None => BodyText::Inline(m.body.clone()),
        };
        results.push(send_one(txn, ctx, &mut q, m, text)?);
    }
    effects.queue_ready(name, q.state.available - available_before);
    q.close(txn);
    Ok(results)
}

fn send_one(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    q: &mut Open,
    m: &NewMessage,
    text: BodyText,
) -> ApplyResult<Result<SentMessage, DomainError>> {
    // Every check comes before the first write: a refused entry leaves no
    // trace.
    let size = m.size();
    let max = q.attrs().maximum_message_size as usize;
    if size > max {
        return Ok(Err(DomainError::invalid(
            "message_body",
            format!("the message is {size} bytes with its attributes; the queue's MaximumMessageSize is {max}"),
        )));
    }
    let now = ctx.now_ms;
    let mut dedup_key = None;
    if q.fifo() {
        let Some(group) = m.group_id.as_deref() else {
            return Ok(Err(DomainError::invalid_with_code(
                "MissingParameter",
                "message_group_id",
                "is required on FIFO queues",
            )));
        };
        let dedup_id = match (&m.dedup_id, q.attrs().content_based_deduplication) {
            (Some(id), _) => id.clone(),
            (None, true) if m.sha256_of_body.is_empty() => message::sha256_hex(m.body.as_bytes()),
            (None, true) => m.sha256_of_body.clone(),
            (None, false) => {
                return Ok(Err(DomainError::invalid_with_code(
                    "MissingParameter",
                    "message_deduplication_id",
                    "is required unless the queue has ContentBasedDeduplication",
                )))
            }
        };
        let scope = match q.attrs().deduplication_scope {
            DedupScope::Queue => "",
            DedupScope::MessageGroup => group,
        };
        let key = q.keys.dedup(scope, &dedup_id);
        if let Some(d) = super::layout::get::<Dedup>(txn, &key)? {
            if d.expires_ms > now {
                // A duplicate inside the window: accepted, not enqueued.
                return Ok(Ok(sent_result(m, d.message_id, Some(d.seq))));
            }
            txn.delete(q.keys.dedup_exp(d.expires_ms, scope, &dedup_id));
        }
        dedup_key = Some((key, scope.to_string(), dedup_id));
    }
    let seq = q.state.next_seq;
    q.state.next_seq += 1;
    let message_id = message::message_id(q.queue.id, seq);
    let delay = m.delay_seconds.unwrap_or(q.attrs().delay_seconds);
    let visibility = if delay > 0 {
        Visibility::Delayed(now + u64::from(delay) * 1000)
    } else {
        Visibility::Available
    };
    let head = Head {
        visibility,
        receive_count: 0,
        first_receive_ms: None,
        sent_ms: now,
        group_id: m.group_id.clone(),
    };
    let body = Body {
        message_id: message_id.clone(),
        body: text,
        attributes: m.attributes.clone(),
        trace_header: m.trace_header.clone(),
        md5_of_body: m.md5_of_body.clone(),
        md5_of_attributes: m.md5_of_attributes.clone(),
        dedup_id: dedup_key.as_ref().map(|(_, _, id)| id.clone()),
        dead_letter_source: None,
    };
    insert(txn, q, seq, head, body);
    if let Some((key, scope, id)) = dedup_key {
        let expires_ms = now + DEDUP_WINDOW_MS;
        txn.put_record(
            key,
            &Dedup {
                expires_ms,
                message_id: message_id.clone(),
                seq,
            },
        );
        txn.put(q.keys.dedup_exp(expires_ms, &scope, &id), Vec::new());
        let group = m.group_id.as_deref().unwrap_or_default();
        fifo::refresh(txn, &q.keys, group)?;
    }
    let fifo_seq = q.fifo().then_some(seq);
    Ok(Ok(sent_result(m, message_id, fifo_seq)))
}

/// Makes due messages (delays and visibility timeouts that have run out)
/// receivable, at most `limit` of them. Returns how many.
pub fn promote_due(txn: &mut Txn<'_>, ctx: &Ctx, q: &mut Open, limit: usize) -> ApplyResult<usize> {
    let prefix = q.keys.due_prefix();
    let mut due = Vec::new();
    for kv in txn.scan_prefix(&prefix).take(limit) {
        let (k, _) = kv?;
        let at = read_u64(&k, prefix.len()).unwrap_or(u64::MAX);
        if at > ctx.now_ms {
            break;
        }
        due.push((at, read_u64(&k, prefix.len() + 8).unwrap_or(0)));
    }
    let mut groups = std::collections::BTreeSet::new();
    for (at, seq) in &due {
        txn.delete(q.keys.due(*at, *seq));
        let Some(mut head) = load_head(txn, &q.keys, *seq)? else {
            continue;
        };
        match head.visibility {
            Visibility::Delayed(t) if t == *at => {
                decrement(&mut q.state.delayed, "delayed");
            }
            Visibility::InFlight(t) if t == *at => {
                decrement(&mut q.state.in_flight, "in_flight");
                if q.fifo() {
                    let group = head.group_id.clone().unwrap_or_default();
                    fifo::add_in_flight(txn, &q.keys, &group, -1)?;
                }
            }
            // A timer left behind by a visibility change: already replaced.
            _ => continue,
        }
        head.visibility = Visibility::Available;
        q.state.available += 1;
        save_head(txn, &q.keys, *seq, &head);
        if q.fifo() {
            groups.insert(head.group_id.clone().unwrap_or_default());
        } else {
            txn.put(q.keys.ready(*seq), Vec::new());
        }
    }
    for group in groups {
        fifo::refresh(txn, &q.keys, &group)?;
    }
    Ok(due.len())
}

/// What to do with each message taken from the queue.
#[derive(Debug, Clone)]
pub enum Take {
    /// Deliver it, hidden for this long.
    Deliver {
        /// Visibility timeout, ms.
        visibility_ms: u64,
    },
    /// Move it to another queue through the outbox.
    Move {
        /// Destination queue; `None`: the queue it was dead-lettered from.
        destination: Option<String>,
    },
}

/// What a take produced.
#[derive(Default)]
pub struct Taken {
    /// Delivered messages.
    pub delivered: Vec<Received>,
    /// Messages moved to the outbox.
    pub moved: u64,
    /// Messages that had no destination to move to.
    pub stranded: Vec<String>,
}

/// The next page of up to `n` keys under `prefix`: those after `cursor`
/// (or from the start), which then moves to the page's last key. An empty
/// page means none are left.
fn next_keys(
    state: &dyn StateRead,
    prefix: &[u8],
    cursor: &mut Option<Vec<u8>>,
    n: usize,
) -> ApplyResult<Vec<Vec<u8>>> {
    let keys: Vec<Vec<u8>> = state
        .scan_prefix_after(prefix, cursor.clone())
        .take(n)
        .map(|kv| kv.map(|(k, _)| k))
        .collect::<Result<_, _>>()?;
    if let Some(last) = keys.last() {
        *cursor = Some(last.clone());
    }
    Ok(keys)
}

impl Taken {
    /// Messages delivered or moved: what counts against a take's `max`.
    fn got(&self) -> usize {
        self.delivered.len() + self.moved as usize
    }
}

/// Takes up to `max` receivable messages, oldest first (FIFO: by group),
/// clearing expired messages and dead-lettering over-received ones on the
/// way. Candidates are read as needed, at most `max` + [`SCAN_SLACK`] in all.
pub fn take(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    q: &mut Open,
    max: usize,
    how: &Take,
) -> ApplyResult<Taken> {
    let mut taken = Taken::default();
    let mut budget = max + SCAN_SLACK;
    if q.fifo() {
        let prefix = q.keys.gready_prefix();
        let mut after_group = None;
        'groups: while taken.got() < max && budget > 0 {
            let keys = next_keys(txn, &prefix, &mut after_group, max - taken.got())?;
            if keys.is_empty() {
                break;
            }
            for k in keys {
                let Some((group, _)) = crate::store::keys::read_str(&k, prefix.len() + 8) else {
                    continue;
                };
                let group = group.to_string();
                let group_prefix = q.keys.grp_prefix(&group);
                let scan = Scan {
                    max,
                    budget: &mut budget,
                    in_order: true,
                };
                take_under(txn, ctx, q, &group_prefix, scan, how, &mut taken)?;
                fifo::refresh(txn, &q.keys, &group)?;
                if !taken.stranded.is_empty() || taken.got() >= max || budget == 0 {
                    break 'groups;
                }
            }
        }
    } else {
        let prefix = q.keys.ready_prefix();
        let scan = Scan {
            max,
            budget: &mut budget,
            in_order: false,
        };
        take_under(txn, ctx, q, &prefix, scan, how, &mut taken)?;
    }
    Ok(taken)
}

/// The bounds of one [`take_under`].
struct Scan<'a> {
    /// Messages wanted in all (`taken` counts towards it).
    max: usize,
    /// Candidates that may still be read; each one read uses one.
    budget: &'a mut usize,
    /// A FIFO group: the first message not available blocks those after it.
    in_order: bool,
}

/// Takes messages in key order from the index under `prefix` (keys ending
/// in a message's sequence number: the ready list, or one FIFO group) into
/// `taken`, until it holds `scan.max`, the budget is spent, the index ends
/// or a message has nowhere to be moved to.
fn take_under(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    q: &mut Open,
    prefix: &[u8],
    scan: Scan<'_>,
    how: &Take,
    taken: &mut Taken,
) -> ApplyResult<()> {
    let Scan {
        max,
        budget,
        in_order,
    } = scan;
    let mut after = None;
    while taken.got() < max && *budget > 0 {
        let want = (max - taken.got()).min(*budget);
        let keys = next_keys(txn, prefix, &mut after, want)?;
        if keys.is_empty() {
            break;
        }
        for k in keys {
            *budget -= 1;
            let seq = read_u64(&k, prefix.len()).unwrap_or(0);
            let Some(head) = load_head(txn, &q.keys, seq)? else {
                continue;
            };
            if in_order && head.visibility != Visibility::Available {
                return Ok(());
            }
            handle_one(txn, ctx, q, seq, head, how, taken)?;
            if !taken.stranded.is_empty() || taken.got() >= max {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn handle_one(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    q: &mut Open,
    seq: u64,
    mut head: Head,
    how: &Take,
    taken: &mut Taken,
) -> ApplyResult<()> {
    let now = ctx.now_ms;
    if q.expired(&head, now) {
        return remove(txn, q, seq, &head);
    }
    match how {
        Take::Deliver { visibility_ms } => {
            if let Some(policy) = &q.attrs().redrive_policy {
                if head.receive_count >= policy.max_receive_count {
                    let dlq = policy.dead_letter_queue.clone();
                    return to_outbox(txn, ctx, q, seq, head, dlq, true);
                }
            }
            head.receive_count += 1;
            head.first_receive_ms.get_or_insert(now);
            let until = now + visibility_ms;
            head.visibility = Visibility::InFlight(until);
            if !q.fifo() {
                txn.delete(q.keys.ready(seq));
            } else {
                let group = head.group_id.clone().unwrap_or_default();
                fifo::add_in_flight(txn, &q.keys, &group, 1)?;
            }
            txn.put(q.keys.due(until, seq), Vec::new());
            decrement(&mut q.state.available, "available");
            q.state.in_flight += 1;
            save_head(txn, &q.keys, seq, &head);
            let body = load_body(txn, &q.keys, seq)?.unwrap_or_else(|| Body {
                message_id: message::message_id(q.queue.id, seq),
                body: BodyText::Inline(String::new()),
                attributes: Default::default(),
                trace_header: None,
                md5_of_body: message::md5_hex(b""),
                md5_of_attributes: None,
                dedup_id: None,
                dead_letter_source: None,
            });
            taken.delivered.push(Received {
                seq,
                receipt: Receipt {
                    qid: q.queue.id,
                    gen: q.keys.gen,
                    seq,
                    receive_count: head.receive_count,
                },
                body,
                sequence_number: q.fifo().then(|| message::sequence_number(seq)),
                head,
            });
            Ok(())
        }
        Take::Move { destination } => {
            let body_source = load_body(txn, &q.keys, seq)?.and_then(|b| b.dead_letter_source);
            let Some(dest) = destination.clone().or(body_source) else {
                let id = message::message_id(q.queue.id, seq);
                taken.stranded.push(id);
                return Ok(());
            };
            taken.moved += 1;
            to_outbox(txn, ctx, q, seq, head, dest, false)
        }
    }
}

/// Moves a message out of the queue into its outbox, bound for `destination`.
/// A dead letter (`dead_letter`) keeps its MessageId, sent time and receive
/// count, and notes the queue it leaves. A message a move task takes is a
/// new message, as SQS redrives them: a new MessageId, the move's time as
/// its sent time (so its retention starts again), no receives yet.
pub fn to_outbox(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    q: &mut Open,
    seq: u64,
    head: Head,
    destination: String,
    dead_letter: bool,
) -> ApplyResult<()> {
    let Some(mut body) = load_body(txn, &q.keys, seq)? else {
        return remove(txn, q, seq, &head);
    };
    remove(txn, q, seq, &head)?;
    if q.fifo() {
        fifo::refresh(txn, &q.keys, head.group_id.as_deref().unwrap_or_default())?;
    }
    let (sent_ms, receive_count, first_receive_ms) = if dead_letter {
        body.dead_letter_source = Some(q.queue.name.clone());
        (head.sent_ms, head.receive_count, head.first_receive_ms)
    } else {
        body.message_id = message::redriven_message_id(q.queue.id, seq);
        (ctx.now_ms, 0, None)
    };
    txn.put_record(
        q.keys.out(seq),
        &Outbox {
            destination,
            message: super::layout::Moving {
                body,
                sent_ms,
                receive_count,
                first_receive_ms,
                group_id: head.group_id,
            },
        },
    );
    q.state.leaving += 1;
    Ok(())
}

/// Receives messages.
pub fn receive(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    req: &ReceiveRequest,
    effects: &mut Effects,
) -> ApplyResult<ReceiveOutcome> {
    let mut q = Open::new(txn, name)?;
    let promoted = promote_due(txn, ctx, &mut q, PROMOTE_ON_RECEIVE)?;
    let attempt_key = match (&req.attempt_id, q.fifo()) {
        (Some(id), true) => Some(id.clone()),
        _ => None,
    };
    if let Some(id) = &attempt_key {
        if let Some(replay) = replay_attempt(txn, ctx, &q, id)? {
            q.close(txn);
            return Ok(ReceiveOutcome {
                messages: replay,
                next_due_ms: None,
            });
        }
    }
    let visibility_ms = u64::from(
        req.visibility_timeout
            .unwrap_or(q.attrs().visibility_timeout),
    ) * 1000;
    let taken = take(
        txn,
        ctx,
        &mut q,
        req.max as usize,
        &Take::Deliver { visibility_ms },
    )?;
    // An attempt that received nothing is not kept: its retry has nothing
    // to get back, and a long poll retrying it must see new messages.
    if let Some(id) = attempt_key.filter(|_| !taken.delivered.is_empty()) {
        let expires_ms = ctx.now_ms + ATTEMPT_WINDOW_MS;
        if let Some(old) = super::layout::get::<Attempt>(txn, &q.keys.attempt(&id))? {
            txn.delete(q.keys.attempt_exp(old.expires_ms, &id));
        }
        txn.put_record(
            q.keys.attempt(&id),
            &Attempt {
                expires_ms,
                received: taken
                    .delivered
                    .iter()
                    .map(|r| (r.seq, r.head.receive_count))
                    .collect(),
            },
        );
        txn.put(q.keys.attempt_exp(expires_ms, &id), Vec::new());
    }
    let next_due_ms = if taken.delivered.is_empty() {
        next_due(txn, &q.keys)?
    } else {
        None
    };
    // Messages this receive made visible and left: other waiting
    // receivers may take them.
    effects.queue_ready(name, (promoted as u64).min(q.state.available));
    q.close(txn);
    Ok(ReceiveOutcome {
        messages: taken.delivered,
        next_due_ms,
    })
}

/// Whether a receive at `now_ms` could take a message: one is visible
/// (on a FIFO queue, a group's head is free) or a hidden one has come due.
/// False only when a receive would certainly return nothing.
pub fn receivable(state: &dyn StateRead, name: &str, now_ms: u64) -> ApplyResult<bool> {
    let q = Open::new(state, name)?;
    let visible = if q.fifo() {
        !fifo::ready_groups(state, &q.keys, 1)?.is_empty()
    } else {
        q.state.available > 0
    };
    Ok(visible || next_due(state, &q.keys)?.is_some_and(|at| at <= now_ms))
}

/// When the earliest hidden message becomes visible.
pub fn next_due(state: &dyn StateRead, keys: &Keys) -> ApplyResult<Option<u64>> {
    let prefix = keys.due_prefix();
    Ok(state
        .first_with_prefix(&prefix)?
        .and_then(|(k, _)| read_u64(&k, prefix.len())))
}

fn replay_attempt(
    txn: &Txn<'_>,
    ctx: &Ctx,
    q: &Open,
    id: &str,
) -> ApplyResult<Option<Vec<Received>>> {
    let Some(attempt) = super::layout::get::<Attempt>(txn, &q.keys.attempt(id))? else {
        return Ok(None);
    };
    if attempt.expires_ms <= ctx.now_ms {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (seq, count) in &attempt.received {
        let Some(head) = load_head(txn, &q.keys, *seq)? else {
            return Ok(None);
        };
        if head.receive_count != *count || !matches!(head.visibility, Visibility::InFlight(_)) {
            return Ok(None);
        }
        let Some(body) = load_body(txn, &q.keys, *seq)? else {
            return Ok(None);
        };
        out.push(Received {
            seq: *seq,
            receipt: Receipt {
                qid: q.queue.id,
                gen: q.keys.gen,
                seq: *seq,
                receive_count: *count,
            },
            body,
            sequence_number: Some(message::sequence_number(*seq)),
            head,
        });
    }
    Ok(Some(out))
}

fn check_receipt(q: &Open, r: &Receipt) -> Result<(), DomainError> {
    if r.qid != q.queue.id {
        return Err(DomainError::invalid_with_code(
            "ReceiptHandleIsInvalid",
            "receipt_handle",
            format!("belongs to another queue than {:?}", q.queue.name),
        ));
    }
    Ok(())
}

/// Deletes messages by receipt handle. A handle of an earlier delivery of a
/// message received again since is accepted but deletes nothing, as in SQS.
pub fn delete(
    txn: &mut Txn<'_>,
    name: &str,
    receipts: &[Receipt],
    effects: &mut Effects,
) -> ApplyResult<Vec<Result<(), DomainError>>> {
    let mut q = Open::new(txn, name)?;
    let mut results = Vec::with_capacity(receipts.len());
    let mut readied = 0;
    for r in receipts {
        if let Err(e) = check_receipt(&q, r) {
            results.push(Err(e));
            continue;
        }
        results.push(Ok(()));
        if r.gen != q.keys.gen {
            continue; // purged since
        }
        let Some(head) = load_head(txn, &q.keys, r.seq)? else {
            continue; // deleted already
        };
        if head.receive_count != r.receive_count {
            continue; // a stale handle
        }
        remove(txn, &mut q, r.seq, &head)?;
        if q.fifo() {
            let group = head.group_id.as_deref().unwrap_or_default();
            readied += u64::from(fifo::refresh(txn, &q.keys, group)?);
        }
    }
    effects.queue_ready(name, readied);
    q.close(txn);
    Ok(results)
}

/// Changes the visibility timeout of in-flight messages.
pub fn change_visibility(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    changes: &[(Receipt, u32)],
    effects: &mut Effects,
) -> ApplyResult<Vec<Result<(), DomainError>>> {
    let q = Open::new(txn, name)?;
    let mut results = Vec::with_capacity(changes.len());
    for (r, seconds) in changes {
        if let Err(e) = check_receipt(&q, r) {
            results.push(Err(e));
            continue;
        }
        let not_in_flight = || {
            DomainError::precondition(
                "MessageNotInflight",
                "receipt_handle: the message is not in flight under this receipt handle",
            )
        };
        let head = if r.gen == q.keys.gen {
            load_head(txn, &q.keys, r.seq)?
        } else {
            None
        };
        let Some(mut head) = head.filter(|h| h.receive_count == r.receive_count) else {
            results.push(Err(not_in_flight()));
            continue;
        };
        let Visibility::InFlight(old) = head.visibility else {
            results.push(Err(not_in_flight()));
            continue;
        };
        let until = ctx.now_ms + u64::from(*seconds) * 1000;
        txn.delete(q.keys.due(old, r.seq));
        txn.put(q.keys.due(until, r.seq), Vec::new());
        head.visibility = Visibility::InFlight(until);
        save_head(txn, &q.keys, r.seq, &head);
        if *seconds == 0 {
            effects.queue_ready(name, 1);
        }
        results.push(Ok(()));
    }
    q.close(txn);
    Ok(results)
}

/// Deletes every message: the queue moves to a new generation and the old
/// one is collected in the background.
pub fn purge(txn: &mut Txn<'_>, ctx: &Ctx, name: &str) -> ApplyResult<()> {
    let mut q = Open::new(txn, name)?;
    if let Some(last) = q.state.last_purge_ms {
        if last + PURGE_INTERVAL_MS > ctx.now_ms {
            return Err(DomainError::precondition(
                "PurgeQueueInProgress",
                format!(
                    "queue {name:?} was purged less than 60 seconds ago; try again in {} s",
                    (last + PURGE_INTERVAL_MS - ctx.now_ms).div_ceil(1000)
                ),
            )
            .into());
        }
    }
    txn.put_record(gc_key(q.queue.id, q.keys.gen), &false);
    q.state = QueueState {
        gen: q.state.gen + 1,
        next_seq: q.state.next_seq,
        last_purge_ms: Some(ctx.now_ms),
        ..QueueState::default()
    };
    q.close(txn);
    Ok(())
}
