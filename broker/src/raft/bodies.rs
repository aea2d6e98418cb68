//! Serving queue message bodies that stay in the log.
//!
//! A message sent by SendMessages keeps its body in the log entry that sent
//! it, and the state holds a [`BodyRef`](sluice_core::queues::layout::BodyRef).
//! The node serving a receive reads the body after the commit, off the apply
//! task: from the entry cache, else the log files, else the copy a snapshot
//! kept in the state tree (`raft::kept_bodies`).

use std::sync::Arc;

use sluice_core::queues::layout::{BodyRef, BodyText};

use super::kept_bodies::{body_in, kept_key, LoggedEntries};
use super::state_machine::StateHandle;
use crate::command::{CommandOutput, CommandResult};
use crate::store::codec;

/// Reads message bodies where they are.
#[derive(Clone)]
pub struct Bodies {
    log: Arc<dyn LoggedEntries>,
    state: StateHandle,
}

impl Bodies {
    /// Bodies read from `log`, or from the copies kept in `state`.
    pub fn new(log: Arc<dyn LoggedEntries>, state: StateHandle) -> Bodies {
        Bodies { log, state }
    }

    /// The body `r` names. An error means it could be found nowhere, or
    /// was damaged: it is never answered with something else.
    pub fn text(&self, r: &BodyRef) -> Result<String, String> {
        let in_log = match self.log.payload(r.index) {
            Ok(Some(payload)) => return body_in(&payload, r),
            Ok(None) => "its log entry is purged".to_string(),
            Err(e) => e,
        };
        let key = kept_key(r);
        match self.state.read(|s| s.get(&key)) {
            Ok(Some(v)) => codec::decode::<String>(&key, &v).map_err(|e| e.to_string()),
            Ok(None) => Err(format!(
                "the body of message {} of entry {} is lost: {in_log}, and no copy was kept",
                r.message, r.index
            )),
            Err(e) => Err(format!("{in_log}; reading the kept copy: {e}")),
        }
    }

    /// Replaces a reference with the body it names.
    pub fn inline(&self, text: &mut BodyText) -> Result<(), String> {
        if let BodyText::Logged(r) = text {
            *text = BodyText::Inline(self.text(r)?);
        }
        Ok(())
    }

    /// Fills in the bodies of the messages a receive returned, on a
    /// blocking thread (older entries are read from the files).
    pub async fn serve(&self, result: CommandResult) -> Result<CommandResult, String> {
        let needs = matches!(&result, Ok(CommandOutput::ReceiveMessages(o))
            if o.messages.iter().any(|m| matches!(m.body.body, BodyText::Logged(_))));
        if !needs {
            return Ok(result);
        }
        let bodies = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut result = result;
            if let Ok(CommandOutput::ReceiveMessages(o)) = &mut result {
                for m in &mut o.messages {
                    if let Err(e) = bodies.inline(&mut m.body.body) {
                        // Damage or loss on this node's disk: answered as
                        // an error (the message shows again after its
                        // visibility timeout), and told to the operator.
                        metrics::counter!("sluice_body_read_failures_total").increment(1);
                        tracing::error!(message_id = %m.body.message_id, error = %e, "a received message's body could not be read");
                        return Err(e);
                    }
                }
            }
            Ok(result)
        })
        .await
        .map_err(|e| format!("reading bodies: {e}"))?
    }
}
