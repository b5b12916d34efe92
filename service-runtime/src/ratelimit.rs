//! Keyed token buckets, sans-IO (the caller passes `now`): per-IP and per-user request limits, and
//! failure counters for login lockout.
//!
//! The table is sharded (dashmap) and capped: when it is full, idle buckets are swept, and if it
//! is still full new keys are refused, so a flood of distinct keys cannot grow memory.

use std::hash::Hash;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// A bucket's rate and size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    /// Tokens the bucket holds when full (the burst).
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Quota {
    /// `n` per `window`, all of which may be spent at once.
    pub fn per(n: u32, window: Duration) -> Self {
        Self { burst: n.max(1), per_second: f64::from(n.max(1)) / window.as_secs_f64().max(1e-3) }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A set of token buckets keyed by `K`.
#[derive(Debug)]
pub struct RateLimiter<K: Hash + Eq> {
    quota: Quota,
    max_keys: usize,
    buckets: DashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        Self { quota, max_keys: max_keys.max(1), buckets: DashMap::new() }
    }

    /// Takes one token for `key`, or returns how long until one is available.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.take(key, now, 1.0)
    }

    /// Whether `key` has a token left, without taking it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        match self.buckets.get(key) {
            None => Ok(()),
            Some(b) => self.wait_for(self.refilled(*b, now), 1.0),
        }
    }

    /// Refills `key` completely (a successful login clears its failures).
    pub fn reset(&self, key: &K) {
        self.buckets.remove(key);
    }

    /// Drops buckets that have refilled completely; they carry no information.
    pub fn sweep(&self, now: Instant) {
        let full = f64::from(self.quota.burst);
        self.buckets.retain(|_, b| self.refilled(*b, now) < full);
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn take(&self, key: &K, now: Instant, cost: f64) -> Result<(), Duration> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.sweep(now);
            if self.buckets.len() >= self.max_keys {
                // Refusing is safer than evicting: evicting would reset some attacker's bucket.
                return Err(Duration::from_secs(1));
            }
        }
        let mut entry = self
            .buckets
            .entry(key.clone())
            .or_insert(Bucket { tokens: f64::from(self.quota.burst), at: now });
        let tokens = self.refilled(*entry, now);
        self.wait_for(tokens, cost)?;
        *entry = Bucket { tokens: tokens - cost, at: now };
        Ok(())
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + dt * self.quota.per_second).min(f64::from(self.quota.burst))
    }

    fn wait_for(&self, tokens: f64, cost: f64) -> Result<(), Duration> {
        if tokens >= cost {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - tokens) / self.quota.per_second.max(1e-9)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(Quota::per(3, Duration::from_secs(3)), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(&"a", t0).is_ok());
        }
        let wait = rl.check(&"a", t0).expect_err("burst spent");
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(rl.check(&"b", t0).is_ok(), "other keys are unaffected");
        assert!(rl.check(&"a", t0 + Duration::from_secs(1)).is_ok());
        assert!(rl.check(&"a", t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn peek_does_not_consume_and_reset_clears() {
        let rl = RateLimiter::new(Quota::per(1, Duration::from_secs(60)), 100);
        let t0 = Instant::now();
        assert!(rl.peek(&1, t0).is_ok());
        assert!(rl.check(&1, t0).is_ok());
        assert!(rl.peek(&1, t0).is_err());
        rl.reset(&1);
        assert!(rl.peek(&1, t0).is_ok());
    }

    #[test]
    fn table_is_capped_and_swept() {
        let rl = RateLimiter::new(Quota::per(1, Duration::from_secs(1)), 2);
        let t0 = Instant::now();
        assert!(rl.check(&1, t0).is_ok());
        assert!(rl.check(&2, t0).is_ok());
        assert!(rl.check(&3, t0).is_err(), "full table refuses new keys");
        assert_eq!(rl.len(), 2);
        let later = t0 + Duration::from_secs(5);
        assert!(rl.check(&3, later).is_ok(), "idle buckets are swept to make room");
        assert_eq!(rl.len(), 1);
    }
}
