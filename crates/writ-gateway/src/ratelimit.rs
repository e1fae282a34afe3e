//! Per-agent rate limiting: a token bucket per key, refilled continuously.
//!
//! Each bucket holds up to a minute's allowance and is stored as one instant: when it will be full
//! again. Taking a token pushes that instant one refill interval later; a request is refused when
//! that would put it more than a minute ahead of now. (This is the token bucket written as GCRA:
//! no floating point, and the wait until the next token falls out exactly.) A bucket whose instant
//! has passed is full, which is the same as having none, so sweeps drop it: memory follows the
//! keys seen in the last minute, not every key ever seen.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The fewest checks between two sweeps of idle buckets.
const SWEEP_EVERY: usize = 1024;

/// A request refused by [`RateLimiter::check`], with the wait until the key's next token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded: retry in {} s", self.header_secs())]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// The wait until the next token.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// The wait in whole seconds rounded up (at least 1), for a `Retry-After` header.
    pub fn header_secs(self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// A token-bucket rate limiter keyed by agent id; thread-safe, share it in an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    /// `None` means unlimited.
    limit: Option<Limit>,
    buckets: Mutex<Buckets>,
}

#[derive(Clone, Copy, Debug)]
struct Limit {
    /// Time to refill one token.
    interval: Duration,
    /// Time to refill a full bucket: `interval × burst`, about a minute.
    window: Duration,
}

#[derive(Debug)]
struct Buckets {
    /// For each key, when its bucket is full again.
    full_at: HashMap<Box<str>, Instant>,
    checks_since_sweep: usize,
    /// Checks to wait before the next sweep: [`SWEEP_EVERY`], or the buckets left by the last
    /// sweep if more, so that a sweep costs O(1) per check and the map stays within about twice
    /// the keys seen in the last minute.
    sweep_after: usize,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per key per minute, in bursts of up to
    /// `per_minute`; `0` means unlimited.
    pub fn new(per_minute: u32) -> Self {
        let limit = (per_minute > 0).then(|| {
            let interval = Duration::from_secs(60) / per_minute;
            Limit {
                interval,
                window: interval * per_minute,
            }
        });
        Self {
            limit,
            buckets: Mutex::new(Buckets::new()),
        }
    }

    /// Takes a token from `key`'s bucket at `now`, or says how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        // Every update below leaves the map consistent, so a panic elsewhere while holding the
        // lock does not invalidate it.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.sweep_if_due(now);

        let full_at = buckets.full_at.get(key).map_or(now, |&t| t.max(now));
        let after = full_at + limit.interval;
        let ahead = after.saturating_duration_since(now);
        if ahead > limit.window {
            return Err(RetryAfter(ahead - limit.window));
        }
        match buckets.full_at.get_mut(key) {
            Some(t) => *t = after,
            None => {
                buckets.full_at.insert(key.into(), after);
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .full_at
            .len()
    }
}

impl Buckets {
    fn new() -> Self {
        Self {
            full_at: HashMap::new(),
            checks_since_sweep: 0,
            sweep_after: SWEEP_EVERY,
        }
    }

    fn sweep_if_due(&mut self, now: Instant) {
        self.checks_since_sweep += 1;
        if self.checks_since_sweep < self.sweep_after {
            return;
        }
        self.checks_since_sweep = 0;
        self.full_at.retain(|_, full_at| *full_at > now);
        self.sweep_after = SWEEP_EVERY.max(self.full_at.len());
        // After a burst of many keys, give the memory back too.
        if self.full_at.capacity() > 4 * self.sweep_after {
            self.full_at.shrink_to_fit();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn burst_is_allowed_then_refused() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        assert_eq!(limiter.check("a", t0), Err(RetryAfter(secs(20))));
    }

    #[test]
    fn tokens_refill_continuously() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check("a", t0).unwrap();
        }
        // One token every 20 s: 10 s in, still 10 s to wait.
        assert_eq!(limiter.check("a", t0 + secs(10)), Err(RetryAfter(secs(10))));
        assert_eq!(limiter.check("a", t0 + secs(20)), Ok(()));
        assert_eq!(limiter.check("a", t0 + secs(20)), Err(RetryAfter(secs(20))));
        // A full minute later the whole burst is back.
        let t1 = t0 + secs(80);
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t1), Ok(()));
        }
        assert!(limiter.check("a", t1).is_err());
    }

    #[test]
    fn refused_checks_take_no_token() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        limiter.check("a", t0).unwrap();
        for _ in 0..5 {
            assert_eq!(limiter.check("a", t0 + secs(30)), Err(RetryAfter(secs(30))));
        }
        assert_eq!(limiter.check("a", t0 + secs(60)), Ok(()));
    }

    #[test]
    fn keys_are_independent() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(limiter.check("a", t0), Ok(()));
        assert!(limiter.check("a", t0).is_err());
        assert_eq!(limiter.check("b", t0), Ok(()));
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::new(0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn retry_after_is_exact_for_uneven_rates() {
        // 7 a minute: one token every 60/7 s, truncated to whole nanoseconds.
        let limiter = RateLimiter::new(7);
        let t0 = Instant::now();
        for _ in 0..7 {
            limiter.check("a", t0).unwrap();
        }
        let interval = Duration::from_nanos(8_571_428_571);
        assert_eq!(limiter.check("a", t0), Err(RetryAfter(interval)));
        let wait = limiter.check("a", t0 + secs(1)).unwrap_err();
        assert_eq!(wait.duration(), interval - secs(1));
        assert_eq!(limiter.check("a", t0 + interval), Ok(()));
    }

    #[test]
    fn header_secs_rounds_up_to_at_least_one() {
        for (wait, header) in [
            (Duration::from_millis(1), 1),
            (Duration::from_millis(999), 1),
            (secs(1), 1),
            (Duration::from_millis(1001), 2),
            (secs(20), 20),
            (Duration::ZERO, 1),
        ] {
            assert_eq!(RetryAfter(wait).header_secs(), header, "{wait:?}");
        }
    }

    #[test]
    fn sweeps_drop_buckets_that_are_full_again() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for key in ["a", "b", "c"] {
            limiter.check(key, t0).unwrap();
        }
        // "busy" keeps taking tokens; at 60 a minute each check moves its refill 1 s later.
        let t1 = t0 + secs(2);
        for _ in 0..5 {
            limiter.check("busy", t1).unwrap();
        }
        assert_eq!(limiter.tracked_keys(), 4);
        // "a", "b", "c" were full again 1 s after t0; "busy" is not yet at t1 + 1 s.
        let t2 = t1 + secs(1);
        for _ in 0..SWEEP_EVERY {
            let _ = limiter.check("flood", t2);
        }
        assert_eq!(limiter.tracked_keys(), 2);
    }

    #[test]
    fn many_distinct_keys_do_not_grow_it_without_bound() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        let mut peak = 0;
        // A new key every millisecond, each seen once: at 10 a minute, a bucket that gave one
        // token is full again 6 s later.
        for i in 0..50_000u64 {
            let now = t0 + Duration::from_millis(i);
            limiter.check(&format!("agent-{i}"), now).unwrap();
            peak = peak.max(limiter.tracked_keys());
        }
        // Live keys at any moment: those seen in the last 6 s, i.e. 6,000; a sweep waits for as
        // many checks as it left buckets, so the map stays within about twice that.
        assert!(peak <= 2 * 6_000 + SWEEP_EVERY, "peak {peak}");
    }
}
