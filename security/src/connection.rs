//! Accepted connections: how many a node keeps, and how long one may sit
//! idle. Idle and half-open connections (a client that sent the HTTP/2
//! preface and nothing more) otherwise stay forever, and at the file
//! descriptor limit new clients cannot get in.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use tokio::time::Instant;

/// Connections refused because the node held its maximum.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Connections closed because they sat idle.
pub static IDLE_CLOSED: AtomicU64 = AtomicU64::new(0);

/// Limits on the connections of a node's listeners (they share the count).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections at most; more are closed as soon as accepted.
    pub max: usize,
    /// A connection with no request in progress and no bytes either way
    /// for this long is closed.
    pub idle: Duration,
    open: Arc<AtomicUsize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::new(10_000, Duration::from_secs(300))
    }
}

impl ConnectionLimits {
    /// At most `max` connections, each closed after `idle` without use.
    pub fn new(max: usize, idle: Duration) -> Self {
        ConnectionLimits {
            max,
            idle,
            open: Arc::default(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for one more connection, if there is room.
    pub(crate) fn try_take(&self) -> Option<Slot> {
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= self.max {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot(self.open.clone())),
                Err(now) => n = now,
            }
        }
    }
}

/// One connection's place in [`ConnectionLimits`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Requests in progress on one connection: a connection serving a long
/// call (a 20 s long poll, a 15-minute invocation) is not idle although no
/// byte moves.
#[derive(Debug, Default)]
pub struct Activity {
    requests: AtomicUsize,
}

impl Activity {
    /// Marks a request in progress until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> Active {
        self.requests.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    fn busy(&self) -> bool {
        self.requests.load(Ordering::Acquire) > 0
    }
}

/// A request in progress (see [`Activity::enter`]).
#[derive(Debug)]
pub struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells when a connection has been idle for its limit.
pub(crate) struct IdleTimer {
    limit: Duration,
    last: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    pub(crate) fn new(limit: Duration) -> Self {
        IdleTimer {
            limit,
            last: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// Bytes moved.
    pub(crate) fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// True once the connection has been idle for the limit; otherwise the
    /// task is woken when it may be.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>, activity: &Activity) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            if activity.busy() {
                self.last = now;
            }
            let due = self.last + self.limit;
            if due <= now {
                IDLE_CLOSED.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_given_back() {
        let limits = ConnectionLimits::new(2, Duration::from_secs(1));
        let a = limits.try_take().unwrap();
        let _b = limits.try_take().unwrap();
        assert!(limits.try_take().is_none());
        assert_eq!(limits.open(), 2);
        drop(a);
        assert!(limits.try_take().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_expires_only_without_bytes_and_requests() {
        let activity = Arc::new(Activity::default());
        let mut timer = IdleTimer::new(Duration::from_secs(10));
        let poll = |timer: &mut IdleTimer| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            timer.poll_expired(&mut cx, &activity)
        };
        assert!(!poll(&mut timer));
        tokio::time::advance(Duration::from_secs(6)).await;
        timer.touch();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!poll(&mut timer), "touched 6 s ago");
        let active = activity.enter();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!poll(&mut timer), "a request is in progress");
        drop(active);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(poll(&mut timer));
    }
}
