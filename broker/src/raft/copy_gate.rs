//! Who may write the engine's copy of the applied state, and when.
//!
//! The engine's copy (the state tree, its stream record files and the
//! queue message keys packed in memory) is written by copies of applied
//! writes, settles, clean-stop persists and snapshot installs, one at a
//! time: each enters the gate. A snapshot build freezes it: it settles the
//! state, then reads the engine's copy while nothing writes it, and apply
//! goes on above it in memory (`state_machine`). Writers that come
//! meanwhile wait for the thaw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The gate (see the module docs).
#[derive(Default)]
pub struct CopyGate {
    held: Mutex<()>,
    /// Set while a [`Frozen`] lives; read without the lock by apply, which
    /// must not block on a copy in progress to learn it.
    frozen: AtomicBool,
    thawed: Condvar,
}

impl CopyGate {
    /// Waits out a freeze, then holds every other writer off until the
    /// guard drops.
    pub fn enter(&self) -> MutexGuard<'_, ()> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while self.frozen.load(Ordering::Acquire) {
            held = self.thawed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held
    }

    /// Whether a snapshot build holds the engine's copy still.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Blocks until no freeze holds.
    pub fn wait_thawed(&self) {
        drop(self.enter());
    }

    /// Freezes the gate, entered as `entered`, until the returned guard
    /// drops: no writer enters meanwhile.
    pub fn freeze(self: &Arc<Self>, entered: MutexGuard<'_, ()>) -> Frozen {
        assert!(!self.is_frozen(), "a gate entered is not frozen");
        self.frozen.store(true, Ordering::Release);
        drop(entered);
        Frozen { gate: self.clone() }
    }
}

/// A freeze of a [`CopyGate`]; dropping it lets writers in again.
pub struct Frozen {
    gate: Arc<CopyGate>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _held = self.gate.held.lock().unwrap_or_else(|e| e.into_inner());
        self.gate.frozen.store(false, Ordering::Release);
        self.gate.thawed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_writer_waits_for_the_thaw_and_apply_sees_the_freeze_without_waiting() {
        let gate = Arc::new(CopyGate::default());
        let frozen = gate.freeze(gate.enter());
        assert!(gate.is_frozen());
        let (entered, rx) = mpsc::channel();
        let writer = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _held = gate.enter();
                entered.send(()).unwrap();
            })
        };
        // Still waiting while frozen (it would have sent by now if not).
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(frozen);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the writer entered after the thaw");
        writer.join().unwrap();
        assert!(!gate.is_frozen());
    }
}
