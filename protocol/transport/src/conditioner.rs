//! A deterministic, seeded link conditioner for tests: latency, jitter, loss (optionally bursty,
//! Gilbert–Elliott), reordering and duplication, applied to packets of any type.
//!
//! [`Conditioner`] is sans-IO: it never reads a clock or touches a socket. The caller pushes
//! packets with the current time and polls out the ones that are due, in due order, and asks
//! [`Conditioner::next_due`] when to wake up next. Given the same [`ConditionerConfig`] (seed
//! included) and the same sequence of calls, it produces the same output, so a failing test
//! replays from the seed it printed.
//!
//! It models two kinds of traffic:
//! - **Datagrams** ([`Conditioner::push`]): what ENet sends over UDP. A packet may be lost,
//!   delayed, overtaken by later ones (only when `reorder > 0`) or delivered twice (only when
//!   `duplicate > 0`).
//! - **A reliable stream** ([`Conditioner::push_stream`]): what a WebSocket sends over TCP. TCP
//!   retransmits, so a "lost" message is not dropped but delayed by `retransmit_delay` per lost
//!   attempt; messages never overtake each other and are never duplicated. This is what
//!   head-of-line blocking looks like to the application.
//!
//! [`AsyncConditioner`] wraps one with a tokio timer for drivers that are futures (the WebSocket
//! connection driver uses it for both directions of a conditioned link).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a conditioned link misbehaves. `Default` is a perfect link (no delay, no loss).
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionerConfig {
    /// One-way delay added to every packet.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per packet. Without `reorder` the delays are
    /// made non-decreasing, so jitter alone never reorders.
    pub jitter: Duration,
    /// Probability (0–1) that a packet is lost; with `burst` set, the loss rate outside bursts.
    pub loss: f64,
    /// Bursty loss (Gilbert–Elliott): when set, the link moves between a good state (loss rate
    /// `loss`) and a bad one (loss rate `burst.loss_in_burst`).
    pub burst: Option<BurstLoss>,
    /// Probability (0–1) that a datagram is held back by `reorder_delay`, so later ones overtake
    /// it. 0 keeps send order. Streams are never reordered.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Probability (0–1) that a datagram is delivered twice. Streams are never duplicated.
    pub duplicate: f64,
    /// In stream mode, the delay each lost transmission adds before the retransmission
    /// (Linux's minimum TCP retransmission timeout is 200 ms).
    pub retransmit_delay: Duration,
    /// Seeds the random number generator; print it in tests so a failure can be replayed.
    pub seed: u64,
}

impl Default for ConditionerConfig {
    fn default() -> Self {
        ConditionerConfig {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(20),
            duplicate: 0.0,
            retransmit_delay: Duration::from_millis(200),
            seed: 0,
        }
    }
}

/// The Gilbert–Elliott two-state loss model. Transitions are drawn once per packet.
///
/// The long-run share of packets sent in the bad state is `enter / (enter + exit)`, and the mean
/// burst length is `1 / exit` packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurstLoss {
    /// Probability, per packet, of moving from the good state into a burst.
    pub enter: f64,
    /// Probability, per packet, of leaving a burst.
    pub exit: f64,
    /// Loss probability inside a burst (1.0 for the classic Gilbert model).
    pub loss_in_burst: f64,
}

/// What a conditioner has done so far, for assertions and test output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConditionerStats {
    /// Packets pushed (either mode).
    pub pushed: u64,
    /// Datagrams dropped.
    pub lost: u64,
    /// Extra copies scheduled by duplication.
    pub duplicated: u64,
    /// Datagrams held back by reordering.
    pub reordered: u64,
    /// Stream transmissions that were "lost" and cost a retransmission delay.
    pub retransmissions: u64,
    /// Packets handed out by `poll`.
    pub delivered: u64,
}

/// The sans-IO conditioner. See the module documentation.
#[derive(Debug)]
pub struct Conditioner<T> {
    config: ConditionerConfig,
    rng: ChaCha8Rng,
    /// Packets waiting for their due time: a min-heap on (due, sequence number).
    queue: BinaryHeap<Scheduled<T>>,
    next_seq: u64,
    /// The latest due time given out in order-preserving mode, so later packets never overtake.
    last_due: Option<Instant>,
    in_burst: bool,
    stats: ConditionerStats,
}

impl<T> Conditioner<T> {
    pub fn new(config: ConditionerConfig) -> Self {
        Conditioner {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            queue: BinaryHeap::new(),
            next_seq: 0,
            last_due: None,
            in_burst: false,
            stats: ConditionerStats::default(),
        }
    }

    pub fn config(&self) -> &ConditionerConfig {
        &self.config
    }

    pub fn stats(&self) -> ConditionerStats {
        self.stats
    }

    /// Packets scheduled and not yet polled.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The earliest time a packet becomes due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|s| s.due)
    }

    /// The next packet due at or before `now`, earliest first (send order among equal times).
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        if self.queue.peek()?.due > now {
            return None;
        }
        let scheduled = self.queue.pop()?;
        self.stats.delivered += 1;
        Some(scheduled.packet)
    }

    /// Queues a packet of a reliable, ordered stream (TCP, WebSocket): loss turns into
    /// retransmission delay, order is kept, nothing is duplicated or dropped.
    pub fn push_stream(&mut self, now: Instant, packet: T) {
        self.stats.pushed += 1;
        let mut delay = self.base_delay();
        // Each lost transmission costs one retransmission delay; the cap keeps a 100% loss
        // configuration from scheduling packets into the far future.
        for _ in 0..16 {
            if !self.lose() {
                break;
            }
            self.stats.retransmissions += 1;
            delay += self.config.retransmit_delay;
        }
        let due = self.in_order(now + delay);
        self.schedule(due, packet);
    }

    fn base_delay(&mut self) -> Duration {
        let jitter = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 { 0 } else { self.rng.gen_range(0..=jitter) };
        self.config.latency + Duration::from_nanos(extra)
    }

    /// Advances the loss state machine by one packet and says whether this packet is lost.
    fn lose(&mut self) -> bool {
        let rate = match self.config.burst {
            None => self.config.loss,
            Some(burst) => {
                let flip = if self.in_burst { burst.exit } else { burst.enter };
                if self.chance(flip) {
                    self.in_burst = !self.in_burst;
                }
                if self.in_burst { burst.loss_in_burst } else { self.config.loss }
            }
        };
        self.chance(rate)
    }

    /// A biased coin. Probabilities outside 0–1 (or NaN) are clamped rather than panicking.
    fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        p >= 1.0 || self.rng.gen_bool(p)
    }

    /// Makes `due` no earlier than any due time handed out before, so send order is kept.
    fn in_order(&mut self, due: Instant) -> Instant {
        let due = match self.last_due {
            Some(last) if last > due => last,
            _ => due,
        };
        self.last_due = Some(due);
        due
    }

    fn schedule(&mut self, due: Instant, packet: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Scheduled { due, seq, packet });
    }
}

impl<T: Clone> Conditioner<T> {
    /// Queues a datagram: it may be lost, delayed, reordered (if `reorder > 0`) or duplicated
    /// (if `duplicate > 0`).
    pub fn push(&mut self, now: Instant, packet: T) {
        self.stats.pushed += 1;
        if self.lose() {
            self.stats.lost += 1;
            return;
        }
        let delay = self.base_delay();
        let due = if self.config.reorder > 0.0 {
            if self.chance(self.config.reorder) {
                self.stats.reordered += 1;
                now + delay + self.config.reorder_delay
            } else {
                now + delay
            }
        } else {
            self.in_order(now + delay)
        };
        if self.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            // The copy follows the original at the same due time; the sequence number keeps it
            // behind, so duplication alone does not reorder.
            self.schedule(due, packet.clone());
        }
        self.schedule(due, packet);
    }
}

/// A conditioner driven by the tokio clock: push packets, await (or poll) them when due.
///
/// Usable under any link whose driver is a future: call [`AsyncConditioner::poll_due`] from the
/// driver's `poll` and it registers the timer wake-up itself.
#[derive(Debug)]
pub struct AsyncConditioner<T> {
    inner: Conditioner<T>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<T> AsyncConditioner<T> {
    pub fn new(config: ConditionerConfig) -> Self {
        AsyncConditioner {
            inner: Conditioner::new(config),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    pub fn conditioner(&self) -> &Conditioner<T> {
        &self.inner
    }

    /// Queues a packet of a reliable stream (see [`Conditioner::push_stream`]).
    pub fn push_stream(&mut self, packet: T) {
        self.inner.push_stream(tokio::time::Instant::now().into_std(), packet);
    }

    /// The next due packet, or `Pending` with the timer armed for the next due time. Returns
    /// `Pending` without a wake-up registered when nothing is queued: the pusher drives the
    /// caller again.
    pub fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        loop {
            let now = tokio::time::Instant::now().into_std();
            if let Some(packet) = self.inner.poll(now) {
                return Poll::Ready(packet);
            }
            let Some(due) = self.inner.next_due() else {
                return Poll::Pending;
            };
            self.sleep.as_mut().reset(tokio::time::Instant::from_std(due));
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Waits for the next due packet (forever if none is queued).
    pub async fn next(&mut self) -> T {
        std::future::poll_fn(|cx| self.poll_due(cx)).await
    }
}

impl<T: Clone> AsyncConditioner<T> {
    /// Queues a datagram (see [`Conditioner::push`]).
    pub fn push(&mut self, packet: T) {
        self.inner.push(tokio::time::Instant::now().into_std(), packet);
    }
}

#[derive(Debug)]
struct Scheduled<T> {
    due: Instant,
    seq: u64,
    packet: T,
}

// `BinaryHeap` is a max-heap: order reversed so the earliest (due, seq) is on top.
impl<T> Ord for Scheduled<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl<T> PartialOrd for Scheduled<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Scheduled<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl<T> Eq for Scheduled<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A seed for randomised tests: `TAVERN_SEED` to replay, otherwise from the clock. Printed.
    fn test_seed(name: &str) -> u64 {
        let seed = std::env::var("TAVERN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
        println!("{name}: seed {seed} (replay with TAVERN_SEED={seed})");
        seed
    }

    /// Pushes `n` datagrams 1 ms apart and drains everything, returning (arrival offset, packet).
    fn run_datagrams(config: ConditionerConfig, n: u32) -> Vec<(Duration, u32)> {
        let start = Instant::now();
        let mut c = Conditioner::new(config);
        let mut out = Vec::new();
        for i in 0..n {
            let now = start + Duration::from_millis(u64::from(i));
            while let Some(p) = c.poll(now) {
                out.push((now - start, p));
            }
            c.push(now, i);
        }
        drain(&mut c, start, &mut out);
        out
    }

    /// Polls exactly at each due time until the conditioner is empty (bounded by its length).
    fn drain<T>(c: &mut Conditioner<T>, start: Instant, out: &mut Vec<(Duration, T)>) {
        for _ in 0..=c.len() {
            let Some(due) = c.next_due() else { break };
            while let Some(p) = c.poll(due) {
                out.push((due - start, p));
            }
        }
        assert!(c.is_empty(), "drain left packets behind");
    }

    fn lossy(seed: u64) -> ConditionerConfig {
        ConditionerConfig {
            latency: Duration::from_millis(30),
            jitter: Duration::from_millis(20),
            loss: 0.1,
            reorder: 0.05,
            duplicate: 0.02,
            seed,
            ..ConditionerConfig::default()
        }
    }

    #[test]
    fn same_seed_gives_the_same_output() {
        let seed = test_seed("same_seed_gives_the_same_output");
        let a = run_datagrams(lossy(seed), 2000);
        let b = run_datagrams(lossy(seed), 2000);
        assert_eq!(a, b);
        let other = run_datagrams(lossy(seed.wrapping_add(1)), 2000);
        assert_ne!(a, other, "a different seed should change the outcome");
    }

    #[test]
    fn loss_rate_is_close_to_the_configured_rate() {
        let seed = test_seed("loss_rate_is_close_to_the_configured_rate");
        let n = 20_000;
        for loss in [0.01, 0.1, 0.3] {
            let config = ConditionerConfig { loss, seed, ..ConditionerConfig::default() };
            let delivered = run_datagrams(config, n).len() as f64;
            let measured = 1.0 - delivered / f64::from(n);
            // Binomial standard deviation at n = 20k is at most 0.0035; 0.02 is over 5 sigma.
            assert!((measured - loss).abs() < 0.02, "loss {loss}: measured {measured}");
        }
    }

    #[test]
    fn bursty_loss_matches_the_gilbert_elliott_average_and_clusters() {
        let seed = test_seed("bursty_loss_matches_the_gilbert_elliott_average_and_clusters");
        let burst = BurstLoss { enter: 0.02, exit: 0.25, loss_in_burst: 1.0 };
        let config = ConditionerConfig { loss: 0.0, burst: Some(burst), seed, ..ConditionerConfig::default() };
        let n = 50_000u32;
        let got: Vec<u32> = run_datagrams(config, n).into_iter().map(|(_, p)| p).collect();
        let expected = 0.02 / (0.02 + 0.25);
        let measured = 1.0 - got.len() as f64 / f64::from(n);
        assert!((measured - expected).abs() < 0.02, "expected {expected}, measured {measured}");
        // Losses come in runs: the mean gap run is about 1/exit = 4, far above the 1.08 that
        // independent losses at the same rate would give.
        let (mut runs, mut lost_total) = (0u32, 0u32);
        let mut prev = None;
        for &p in &got {
            let gap = p - prev.map_or(0, |q: u32| q + 1);
            if gap > 0 {
                runs += 1;
                lost_total += gap;
            }
            prev = Some(p);
        }
        let mean_run = f64::from(lost_total) / f64::from(runs.max(1));
        assert!(mean_run > 2.5, "mean loss run {mean_run} does not look bursty");
    }

    #[test]
    fn delays_stay_within_latency_and_jitter() {
        let seed = test_seed("delays_stay_within_latency_and_jitter");
        let latency = Duration::from_millis(40);
        let jitter = Duration::from_millis(15);
        let config = ConditionerConfig { latency, jitter, reorder: 0.5, seed, ..ConditionerConfig::default() };
        let start = Instant::now();
        let mut c = Conditioner::new(config);
        for i in 0..1000u64 {
            c.push(start + Duration::from_millis(i), i);
        }
        let mut out = Vec::new();
        drain(&mut c, start, &mut out);
        assert_eq!(out.len(), 1000);
        let (mut min, mut max) = (Duration::MAX, Duration::ZERO);
        for (at, sent) in out {
            let delay = at - Duration::from_millis(sent);
            min = min.min(delay);
            max = max.max(delay);
        }
        assert!(min >= latency, "min delay {min:?}");
        assert!(max <= latency + jitter + Duration::from_millis(20), "max delay {max:?}");
        // 1000 samples of a 15 ms uniform jitter: both ends are reached closely.
        assert!(min < latency + Duration::from_millis(1), "min delay {min:?}");
    }

    #[test]
    fn reordering_happens_only_when_enabled() {
        let seed = test_seed("reordering_happens_only_when_enabled");
        let is_sorted = |out: &[(Duration, u32)]| out.windows(2).all(|w| w[0].1 <= w[1].1);
        // Large jitter relative to the send spacing: would reorder if due times were not clamped.
        let base = ConditionerConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(50),
            loss: 0.1,
            seed,
            ..ConditionerConfig::default()
        };
        assert!(is_sorted(&run_datagrams(base.clone(), 2000)), "reordered with reorder = 0");
        let on = ConditionerConfig { reorder: 0.1, ..base };
        assert!(!is_sorted(&run_datagrams(on, 2000)), "no reordering with reorder = 0.1");
    }

    #[test]
    fn stream_mode_delivers_everything_in_order_with_retransmission_delay() {
        let seed = test_seed("stream_mode_delivers_everything_in_order_with_retransmission_delay");
        let config = ConditionerConfig {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            loss: 0.1,
            reorder: 0.5,
            duplicate: 0.5,
            seed,
            ..ConditionerConfig::default()
        };
        let start = Instant::now();
        let mut c = Conditioner::new(config);
        for i in 0..1000u32 {
            c.push_stream(start + Duration::from_millis(u64::from(i)), i);
        }
        let stats = c.stats();
        let mut out = Vec::new();
        drain(&mut c, start, &mut out);
        let got: Vec<u32> = out.iter().map(|(_, p)| *p).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert!(stats.retransmissions > 50, "{stats:?}");
        assert_eq!((stats.lost, stats.duplicated, stats.reordered), (0, 0, 0));
    }

    #[test]
    fn nothing_is_due_before_it_is_time() {
        let start = Instant::now();
        let mut c = Conditioner::new(ConditionerConfig { latency: Duration::from_millis(5), ..Default::default() });
        c.push(start, 1u8);
        assert_eq!(c.poll(start + Duration::from_millis(4)), None);
        assert_eq!(c.next_due(), Some(start + Duration::from_millis(5)));
        assert_eq!(c.poll(start + Duration::from_millis(5)), Some(1));
        assert_eq!(c.poll(start + Duration::from_secs(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn async_conditioner_waits_for_the_due_time() {
        let latency = Duration::from_millis(50);
        let mut c = AsyncConditioner::new(ConditionerConfig { latency, ..Default::default() });
        let start = tokio::time::Instant::now();
        c.push_stream("a");
        c.push_stream("b");
        assert_eq!(c.next().await, "a");
        assert_eq!(c.next().await, "b");
        assert_eq!(start.elapsed(), latency);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the configuration and push times: nothing comes out before it was pushed plus
        /// the latency, nothing comes out twice unless duplication is on, and without loss and
        /// duplication everything comes out exactly once.
        #[test]
        fn never_early_never_duplicated_unless_enabled(
            seed in any::<u64>(),
            latency_ms in 0u64..100,
            jitter_ms in 0u64..100,
            loss in 0.0f64..0.5,
            reorder in prop_oneof![Just(0.0), 0.0f64..0.5],
            duplicate in prop_oneof![Just(0.0), 0.0f64..0.5],
            stream in any::<bool>(),
            gaps in proptest::collection::vec(0u64..20, 1..200),
        ) {
            let latency = Duration::from_millis(latency_ms);
            let config = ConditionerConfig {
                latency,
                jitter: Duration::from_millis(jitter_ms),
                loss,
                reorder,
                duplicate,
                seed,
                ..ConditionerConfig::default()
            };
            let start = Instant::now();
            let mut c = Conditioner::new(config);
            let mut pushed_at = Vec::new();
            let mut out: Vec<(Instant, usize)> = Vec::new();
            let mut now = start;
            for (i, gap) in gaps.iter().enumerate() {
                now += Duration::from_millis(*gap);
                while let Some(p) = c.poll(now) {
                    out.push((now, p));
                }
                pushed_at.push(now);
                if stream { c.push_stream(now, i) } else { c.push(now, i) }
            }
            for _ in 0..=c.len() {
                let Some(due) = c.next_due() else { break };
                while let Some(p) = c.poll(due) {
                    out.push((due, p));
                }
            }
            prop_assert!(c.is_empty());
            let mut count = vec![0u32; gaps.len()];
            for (at, p) in &out {
                prop_assert!(*at >= pushed_at[*p] + latency, "packet {} early", p);
                count[*p] += 1;
            }
            let max_copies = if duplicate > 0.0 && !stream { 2 } else { 1 };
            prop_assert!(count.iter().all(|&n| n <= max_copies));
            if stream {
                prop_assert!(count.iter().all(|&n| n == 1), "stream lost or duplicated a packet");
                prop_assert!(out.windows(2).all(|w| w[0].1 < w[1].1), "stream reordered");
            }
            if reorder == 0.0 {
                prop_assert!(out.windows(2).all(|w| w[0].1 <= w[1].1), "reordered with reorder = 0");
            }
        }
    }
}
