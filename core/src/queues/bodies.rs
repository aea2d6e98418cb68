//! Message bodies that stay in the log.
//!
//! A message sent by SendMessages keeps its body in the log entry that
//! carried it; the state holds a [`BodyRef`] (see [`BodyText`]). This module
//! is what a node needs to serve and keep such bodies, and what the core
//! alone knows: which command and message a reference names, and where in
//! the state references are.
//!
//! - `Command::sent_body` reads a body out of the command a reference names.
//! - [`for_each_logged`] lists the references the state holds, so that a node
//!   can copy their bodies out of the log before it purges the entries that
//!   hold them.

use std::ops::Bound;

use super::layout::{BodyRef, BodyText, Outbox, StoredBody};
use crate::error::ApplyResult;
use crate::store::codec;
use crate::store::keys::{prefix_end, read_str};
use crate::store::StateRead;

/// Calls `f` with every body reference the state holds: in the messages of
/// every queue generation (collected ones included, until they are gone)
/// and in their outboxes.
pub fn for_each_logged(state: &dyn StateRead, mut f: impl FnMut(BodyRef)) -> ApplyResult<()> {
    let prefix = super::layout::MESSAGES.to_vec();
    for kv in state.range(Bound::Included(prefix.clone()), prefix_end(&prefix), false) {
        let (key, value) = kv?;
        if let Some(r) = logged_in(&key, &value)? {
            f(r);
        }
    }
    Ok(())
}

/// The body reference the state record `key` = `value` holds, if any: what
/// [`for_each_logged`] finds, one record at a time (in a snapshot file, say).
pub fn logged_in(key: &[u8], value: &[u8]) -> ApplyResult<Option<BodyRef>> {
    let prefix = super::layout::MESSAGES;
    if !key.starts_with(prefix) {
        return Ok(None);
    }
    // `m/`, queue id, generation, then the part's name.
    let text = match read_str(key, prefix.len() + 16) {
        Some(("body", _)) => match codec::decode::<StoredBody>(key, value)? {
            StoredBody::V1(b) => b.body,
        },
        Some(("out", _)) => codec::decode::<Outbox>(key, value)?.message.body.body,
        _ => return Ok(None),
    };
    Ok(match text {
        BodyText::Logged(r) => Some(r),
        BodyText::Inline(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Ctx, Effects};
    use crate::command::Command;
    use crate::machine;
    use crate::queues::message::{NewMessage, Outgoing};
    use crate::queues::{CreateQueue, SendMessages};
    use crate::store::MemState;

    fn message(body: &str) -> NewMessage {
        NewMessage::validate(
            "m",
            false,
            Outgoing {
                body: body.into(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// A message sent from the log keeps a reference to its command; one
    /// sent by a tool keeps its body; the references are listed and each
    /// names its body.
    #[test]
    fn a_logged_send_keeps_a_reference_that_names_its_body() {
        let mut state = MemState::default();
        let create: Command = CreateQueue::new("q", &Default::default(), Default::default())
            .unwrap()
            .into();
        let send: Command = SendMessages {
            queue: "q".into(),
            messages: vec![message("a"), message("b")],
        }
        .into();
        let entry = [create, send.clone()];
        let mut effects = Effects::default();
        let ctx = Ctx::in_entry(1, 7);
        state
            .run(|txn| machine::apply_entry(txn, &ctx, &entry, &mut effects))
            .unwrap();
        state
            .run(|txn| {
                machine::apply_entry(txn, &Ctx::at(2), std::slice::from_ref(&send), &mut effects)
            })
            .unwrap();
        let mut refs = Vec::new();
        for_each_logged(&state, |r| refs.push(r)).unwrap();
        assert_eq!(
            refs,
            [0, 1].map(|message| BodyRef {
                index: 7,
                command: 1,
                message,
                bytes: 1,
            })
        );
        let bodies: Vec<_> = refs
            .iter()
            .map(|r| entry[r.command as usize].sent_body(r))
            .collect();
        assert_eq!(bodies, [Some("a"), Some("b")]);
        assert_eq!(entry[0].sent_body(&refs[0]), None);
        let past_the_end = BodyRef {
            message: 2,
            ..refs[0]
        };
        assert_eq!(send.sent_body(&past_the_end), None);
    }

    /// A move between queues carries bodies, never references: one with a
    /// reference is refused whole and changes nothing.
    #[test]
    fn a_move_carrying_a_reference_is_refused() {
        let mut w = crate::testing::World::new();
        w.run(CreateQueue::new("d", &Default::default(), Default::default()).unwrap())
            .unwrap();
        let moving = |body| crate::queues::layout::Moving {
            body: crate::queues::layout::Body {
                message_id: "id".into(),
                body,
                attributes: Default::default(),
                trace_header: None,
                md5_of_body: String::new(),
                md5_of_attributes: None,
                dedup_id: None,
                dead_letter_source: None,
            },
            sent_ms: 1,
            receive_count: 1,
            first_receive_ms: None,
            group_id: None,
        };
        let logged = BodyText::Logged(BodyRef {
            index: 1,
            command: 0,
            message: 0,
            bytes: 1,
        });
        let before = w.state.pairs().clone();
        let err = w
            .run(crate::queues::AcceptMoved {
                queue: "d".into(),
                from: 9,
                messages: vec![
                    (1, moving(BodyText::Inline("b".into()))),
                    (2, moving(logged)),
                ],
            })
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("messages[1].body"), "{err}");
        assert_eq!(w.state.pairs(), &before);
    }
}
