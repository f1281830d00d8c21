//! Per-source token buckets for the 429 answer. Source addresses exist only
//! as keys of an in-memory map: they are never stored, logged or counted
//! anywhere else, and idle entries are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sweep the map for idle buckets at most this often, so the cost is
/// spread out and the map cannot grow without bound.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<State>,
}

struct State {
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A refused request: when the source may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: f64::from(burst),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Take one token for `source`.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let key = source_key(source);
        let mut state = self.state.lock().expect("rate limiter lock");
        if now.duration_since(state.last_sweep) >= SWEEP_EVERY {
            self.sweep(&mut state, now);
        }
        let bucket = state.buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(RetryAfter(Duration::from_secs_f64(wait.min(86_400.0))))
        }
    }

    /// A bucket that would be full again carries no information: forget it.
    fn sweep(&self, state: &mut State, now: Instant) {
        let refill = (self.burst / self.per_second).min(86_400.0);
        state
            .buckets
            .retain(|_, b| now.duration_since(b.updated).as_secs_f64() < refill);
        state.last_sweep = now;
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().unwrap().buckets.len()
    }
}

/// IPv6 clients typically own a whole /64, so that is the unit one bucket
/// covers; an IPv4-mapped address counts as its IPv4 address.
pub(super) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let rl = RateLimiter::new(2.0, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(ip, t0).is_ok());
        }
        let RetryAfter(wait) = rl.check(ip, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500));
        assert!(rl.check(ip, t0 + Duration::from_millis(500)).is_ok());
        // Another source has its own bucket.
        assert!(rl.check("192.0.2.2".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn one_ipv6_slash_64_shares_a_bucket() {
        let rl = RateLimiter::new(1.0, 1);
        let t0 = Instant::now();
        assert!(rl.check("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(rl.check("2001:db8::2".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn idle_sources_are_forgotten() {
        let rl = RateLimiter::new(10.0, 10);
        let t0 = Instant::now();
        rl.check("192.0.2.1".parse().unwrap(), t0).unwrap();
        rl.check("192.0.2.2".parse().unwrap(), t0 + SWEEP_EVERY)
            .unwrap();
        assert_eq!(rl.tracked(), 1);
    }
}
