//! The side-by-side workloads: the same load on Sluice, NATS JetStream and
//! RabbitMQ, through each one's own client.
//!
//! Every message carries the time its send started (16 hex digits of
//! nanoseconds since the run began, then padding to the message size), so a
//! consumer in the same process measures the end-to-end latency without
//! clocks to agree on. Producers keep `concurrency` sends in flight, each
//! waiting for the broker's acknowledgement (durable by the broker's own
//! contract); consumers keep a window of `max(10, concurrency)` messages.
//!
//! The pipelines are closed loops end to end: at most `concurrency`
//! messages are between a send's start and a consumer, so producers cannot
//! outrun consumers into an ever-growing backlog (whose latency would only
//! measure how long the run lasted). The throughput is then what the broker
//! sustains end to end, and the latency that of a queue kept short.

pub mod nats;
pub mod rabbitmq;
pub mod sluice;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::histogram;

/// A comparison workload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// Producers only, to a replicated queue.
    QueueSend,
    /// Producers to a replicated queue and consumers that receive and
    /// delete (acknowledge) each message.
    QueuePipeline,
    /// Producers to a replicated stream (log) and consumers that read it
    /// without removing anything.
    StreamPipeline,
    /// Publishers to a topic (SNS-style; NATS: a stream with one durable
    /// consumer per subscription; RabbitMQ: a fanout exchange) delivering
    /// to `--subscriptions` replicated queues, each with consumers that
    /// receive and delete (acknowledge).
    TopicFanout,
}

impl Shape {
    /// Whether messages are consumed as well as sent.
    pub fn consumes(self) -> bool {
        self != Shape::QueueSend
    }

    /// Whether the destination is a stream (log) rather than a queue.
    pub fn is_stream(self) -> bool {
        self == Shape::StreamPipeline
    }
}

/// A broker under test, set up for one run of one [`Shape`].
pub trait Broker: Send + Sync + 'static {
    /// Sends one message and waits until the broker acknowledges it.
    fn send(&self, body: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;

    /// Starts consumers that keep about `window` messages in flight and
    /// hand every message to `sink` before acknowledging (or deleting) it.
    fn consume(
        self: &Arc<Self>,
        window: usize,
        sink: Arc<Sink>,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Removes what the run created.
    fn teardown(&self) -> impl Future<Output = ()> + Send;
}

/// A message body stamped with `sent`, nanoseconds since `base`.
pub fn stamp(base: Instant, bytes: usize) -> Vec<u8> {
    let nanos = base.elapsed().as_nanos() as u64;
    let mut body = format!("{nanos:016x}").into_bytes();
    body.resize(bytes.max(16), b'x');
    body
}

/// The send time stamped on `body` by [`stamp`].
pub fn stamped(body: &[u8]) -> Option<Duration> {
    let hex = std::str::from_utf8(body.get(..16)?).ok()?;
    u64::from_str_radix(hex, 16).ok().map(Duration::from_nanos)
}

/// Where consumers report what they received.
pub struct Sink {
    base: Instant,
    measure_from: Duration,
    until: Duration,
    end_to_end: Mutex<Histogram<u64>>,
    received: AtomicU64,
    malformed: AtomicU64,
    /// Pipelines: one permit per message a producer may start.
    credit: Semaphore,
    /// Deliveries per message sent (fan-out: the subscriptions).
    fanout: u64,
    /// Deliveries seen, for the credit of fan-out runs.
    arrivals: AtomicU64,
}

impl Sink {
    #[cfg(test)]
    fn new(base: Instant, measure_from: Duration, until: Duration, window: usize) -> Sink {
        Sink::with_fanout(base, measure_from, until, window, 1)
    }

    fn with_fanout(
        base: Instant,
        measure_from: Duration,
        until: Duration,
        window: usize,
        fanout: usize,
    ) -> Sink {
        Sink {
            credit: Semaphore::new(window),
            fanout: fanout.max(1) as u64,
            arrivals: AtomicU64::new(0),
            base,
            measure_from,
            until,
            end_to_end: Mutex::new(histogram()),
            received: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    /// Counts one received message: in the throughput when it arrived
    /// inside the measured window, in the latency when it was also sent
    /// inside it.
    pub fn received(&self, body: &[u8]) {
        // One more send per message sent, whichever subscription's copy
        // completes the count: a closed loop over publishes.
        if (self.arrivals.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.fanout) {
            self.credit.add_permits(1);
        }
        let now = self.base.elapsed();
        if now < self.measure_from || now >= self.until {
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        match stamped(body) {
            Some(sent) if sent <= now => {
                if sent >= self.measure_from {
                    let micros = ((now - sent).as_micros() as u64).max(1);
                    self.end_to_end
                        .lock()
                        .expect("histogram")
                        .saturating_record(micros);
                }
            }
            _ => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What a comparison run measured.
pub struct Outcome {
    /// Measured seconds.
    pub seconds: f64,
    /// Sends started in the window and acknowledged.
    pub sent: u64,
    /// Send latency from start to acknowledgement.
    pub send_latency: Histogram<u64>,
    /// Sends that failed.
    pub send_errors: u64,
    /// Messages consumed in the window.
    pub received: u64,
    /// End-to-end latency, send start to the consumer (µs).
    pub end_to_end: Histogram<u64>,
    /// Messages whose stamp could not be read.
    pub malformed: u64,
}

/// The settings of one comparison run.
#[derive(Clone, Copy, Debug)]
pub struct RunSpec {
    /// Producers, each with one send in flight.
    pub concurrency: usize,
    /// Message size.
    pub message_bytes: usize,
    /// Deliveries per message (the subscriptions of a fan-out, else 1).
    pub fanout: usize,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// Runs `shape` on `broker`: `concurrency` producers (each one send in
/// flight) and, when the shape consumes, consumers with a window of
/// `max(10, concurrency)`; `warmup` unmeasured, then `duration` measured.
pub async fn run<B: Broker>(
    broker: Arc<B>,
    shape: Shape,
    spec: RunSpec,
) -> Result<Outcome, String> {
    let RunSpec {
        concurrency,
        message_bytes,
        fanout,
        warmup,
        duration,
    } = spec;
    let base = Instant::now();
    let measure_from = warmup;
    let until = warmup + duration;
    let sink = Arc::new(Sink::with_fanout(
        base,
        measure_from,
        until,
        concurrency,
        fanout,
    ));
    if shape.consumes() {
        broker.consume(concurrency.max(10), sink.clone()).await?;
    }
    let producers: Vec<_> = (0..concurrency)
        .map(|id| {
            let broker = broker.clone();
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut sent, mut errors) = (0u64, 0u64);
                while base.elapsed() < until {
                    if shape.consumes() {
                        // The consumer gives the permit back on arrival.
                        let wait =
                            tokio::time::timeout_at((base + until).into(), sink.credit.acquire());
                        match wait.await {
                            Ok(permit) => permit.expect("semaphore open").forget(),
                            Err(_) => break,
                        }
                    }
                    let started = base.elapsed();
                    let body = stamp(base, message_bytes);
                    let result = broker.send(body).await;
                    if started < measure_from {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            sent += 1;
                            let micros = ((base.elapsed() - started).as_micros() as u64).max(1);
                            latency.saturating_record(micros);
                        }
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("producer {id}: {e}");
                            }
                            errors += 1;
                        }
                    }
                }
                (sent, errors, latency)
            })
        })
        .collect();
    tokio::time::sleep_until((base + measure_from).into()).await;
    // For tools that watch the run (scripts/profile): the warm-up is over.
    eprintln!("sluice-bench: measuring for {} s", duration.as_secs());
    let mut outcome = Outcome {
        seconds: duration.as_secs_f64(),
        sent: 0,
        send_latency: histogram(),
        send_errors: 0,
        received: 0,
        end_to_end: histogram(),
        malformed: 0,
    };
    for p in producers {
        let (sent, errors, latency) = p.await.map_err(|e| format!("producer: {e}"))?;
        outcome.sent += sent;
        outcome.send_errors += errors;
        outcome
            .send_latency
            .add(&latency)
            .map_err(|e| format!("histogram: {e}"))?;
    }
    // Producers stop at the end of the window; what consumers get later is
    // not counted, so there is nothing to wait for.
    tokio::time::sleep_until((base + until).into()).await;
    outcome.received = sink.received.load(Ordering::Relaxed);
    outcome.malformed = sink.malformed.load(Ordering::Relaxed);
    outcome.end_to_end = sink.end_to_end.lock().expect("histogram").clone();
    broker.teardown().await;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_the_time_it_was_made() {
        let base = Instant::now() - Duration::from_secs(3);
        let body = stamp(base, 1024);
        assert_eq!(body.len(), 1024);
        let sent = stamped(&body).expect("a stamp");
        assert!(sent >= Duration::from_secs(3) && sent <= base.elapsed());
        assert_eq!(stamped(b"not a stamp at all"), None);
    }

    #[test]
    fn the_sink_counts_only_the_measured_window() {
        let base = Instant::now() - Duration::from_secs(10);
        // Window from 5 s to 20 s after base: now (10 s) is inside it.
        let sink = Sink::new(base, Duration::from_secs(5), Duration::from_secs(20), 1);
        let mut early = format!("{:016x}", Duration::from_secs(1).as_nanos()).into_bytes();
        early.resize(64, b'x');
        let mut inside = format!("{:016x}", Duration::from_secs(9).as_nanos()).into_bytes();
        inside.resize(64, b'x');
        sink.received(&early);
        sink.received(&inside);
        sink.received(b"garbage");
        assert_eq!(sink.received.load(Ordering::Relaxed), 3);
        assert_eq!(sink.malformed.load(Ordering::Relaxed), 1);
        let h = sink.end_to_end.lock().unwrap();
        // Only the message sent inside the window has a latency: ~1 s.
        assert_eq!(h.len(), 1);
        // Three significant digits: 1 s reads back as 0.9999 s or more.
        let micros = h.value_at_quantile(0.5);
        assert!((999_000..2_000_000).contains(&micros), "{micros}");
        drop(h);
        // A sink whose window has closed counts nothing.
        let closed = Sink::new(base, Duration::from_secs(1), Duration::from_secs(2), 1);
        closed.received(&inside);
        assert_eq!(closed.received.load(Ordering::Relaxed), 0);
        // Every arrival, counted or not, gives a producer one more send.
        assert_eq!(sink.credit.available_permits(), 1 + 3);
        assert_eq!(closed.credit.available_permits(), 1 + 1);
    }

    #[test]
    fn a_fan_out_gives_one_send_per_full_set_of_deliveries() {
        let base = Instant::now();
        let sink = Sink::with_fanout(base, Duration::ZERO, Duration::from_secs(60), 0, 3);
        for _ in 0..5 {
            sink.received(b"x");
        }
        assert_eq!(sink.credit.available_permits(), 1);
        sink.received(b"x");
        assert_eq!(sink.credit.available_permits(), 2);
    }
}
