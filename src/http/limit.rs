//! Token buckets: one per key, refilled at a steady rate up to a burst. Changes are limited per
//! principal (`server.rate_limit_per_second`, `server.rate_limit_burst`; reads never are), and
//! the same buckets, keyed by client address, limit logins and failed authentication (see
//! `throttle.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets beyond this many are pruned (full ones first) so the map cannot grow without end.
const MAX_BUCKETS: usize = 10_000;

/// Token buckets, one per key (a principal's name, a client address).
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `per_second` changes per principal with bursts of `burst`; a zero
    /// rate turns limiting off.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one change from `who`'s bucket at `now`; when it is empty, the seconds to wait.
    pub fn check(&self, who: &str, now: Instant) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(who) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (level, at)| *level + now.duration_since(*at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let (level, at) = buckets.entry(who.to_string()).or_insert((self.burst, now));
        *level =
            (*level + now.saturating_duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *level) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// True while `who`'s bucket is full at `now`: nothing was taken from it lately.
    pub fn is_full(&self, who: &str, now: Instant) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.get(who).is_none_or(|(level, at)| {
            level + now.saturating_duration_since(*at).as_secs_f64() * self.per_second >= self.burst
        })
    }

    /// Puts back one taken from `who`'s bucket (never beyond the burst).
    pub fn give_back(&self, who: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((level, _)) = buckets.get_mut(who) {
            *level = (*level + 1.0).min(self.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        assert_eq!(limiter.check("a", t0), Err(1));
        assert_eq!(
            limiter.check("b", t0),
            Ok(()),
            "each principal has its own bucket"
        );
        assert_eq!(
            limiter.check("a", t0 + Duration::from_millis(500)),
            Ok(()),
            "refilled at 2/s"
        );
        assert!(limiter.check("a", t0 + Duration::from_millis(500)).is_err());
        assert!(
            limiter.is_full("b", t0 + Duration::from_millis(500)),
            "b took one, refilled"
        );
        assert!(!limiter.is_full("a", t0 + Duration::from_millis(500)));
        limiter.give_back("a");
        assert_eq!(
            limiter.check("a", t0 + Duration::from_millis(500)),
            Ok(()),
            "one given back"
        );
        assert_eq!(
            RateLimiter::new(0.0, 1).check("a", t0),
            Ok(()),
            "zero turns it off"
        );
    }
}
