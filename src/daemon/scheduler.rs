//! When the next report goes out: a random first moment after start, the
//! interval with a little jitter after a success, and doubling, jittered
//! backoff after a failure, honouring the collector's `Retry-After`.
//!
//! Pure functions of the settings, the remembered times and a random
//! source, so tests drive them directly; the service loop only sleeps.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Fraction of the interval by which a regular report may move, so that
/// installations started together do not report together forever.
const INTERVAL_JITTER: f64 = 0.03;

/// The longest `Retry-After` obeyed; a collector cannot switch a client off
/// for longer than a day by accident.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The timing settings the schedule depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub start_delay: Duration,
    pub error_delay: Duration,
}

/// Delay before the first report after start. A recent success (or a
/// recent failed attempt, in a crash-restart loop) pushes it back, so
/// restarting the service never sends early.
pub fn first_delay(
    timing: Timing,
    last_success: Option<SystemTime>,
    last_attempt: Option<SystemTime>,
    now: SystemTime,
    rng: &mut impl Rng,
) -> Duration {
    let mut delay = random_up_to(timing.start_delay, rng);
    let until = |since: Option<SystemTime>, gap: Duration| {
        since
            .and_then(|t| (t + gap).duration_since(now).ok())
            .unwrap_or(Duration::ZERO)
    };
    delay = delay.max(until(last_success, timing.interval));
    delay = delay.max(until(last_attempt, timing.error_delay.min(timing.interval)));
    delay
}

/// Delay after a successful report: the interval, give or take a few
/// percent.
pub fn after_success(timing: Timing, rng: &mut impl Rng) -> Duration {
    let spread = timing.interval.as_secs_f64() * INTERVAL_JITTER;
    let offset = rng.gen_range(-spread..=spread);
    Duration::from_secs_f64((timing.interval.as_secs_f64() + offset).max(1.0))
}

/// Delay after the `failures`-th consecutive failure (1 for the first):
/// `error_delay` doubling each time, capped at the interval, then jittered
/// down by up to half ("equal jitter") so that clients that failed together
/// spread out; a `Retry-After` longer than that is obeyed.
pub fn after_failure(
    timing: Timing,
    failures: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
    let base = timing
        .error_delay
        .saturating_mul(doubling)
        .min(timing.interval.max(timing.error_delay));
    let half = base / 2;
    let delay = half + random_up_to(base - half, rng);
    match retry_after {
        Some(asked) => delay.max(asked.min(MAX_RETRY_AFTER)),
        None => delay,
    }
}

fn random_up_to(limit: Duration, rng: &mut impl Rng) -> Duration {
    if limit.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(rng.gen_range(0.0..=limit.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const TIMING: Timing = Timing {
        interval: Duration::from_secs(3600),
        start_delay: Duration::from_secs(60),
        error_delay: Duration::from_secs(60),
    };

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn first_report_comes_within_the_start_delay() {
        let now = SystemTime::now();
        let mut rng = rng();
        for _ in 0..200 {
            let d = first_delay(TIMING, None, None, now, &mut rng);
            assert!(d <= TIMING.start_delay);
        }
    }

    #[test]
    fn a_recent_success_pushes_the_first_report_to_the_interval() {
        let now = SystemTime::now();
        let ten_minutes_ago = now - Duration::from_secs(600);
        let d = first_delay(TIMING, Some(ten_minutes_ago), None, now, &mut rng());
        assert_eq!(d.as_secs(), 3000);
        let long_ago = now - Duration::from_secs(7200);
        assert!(first_delay(TIMING, Some(long_ago), None, now, &mut rng()) <= TIMING.start_delay);
    }

    #[test]
    fn a_restart_loop_waits_the_error_delay_after_the_last_attempt() {
        let now = SystemTime::now();
        let timing = Timing {
            start_delay: Duration::ZERO,
            ..TIMING
        };
        let just_now = now - Duration::from_secs(1);
        let d = first_delay(timing, None, Some(just_now), now, &mut rng());
        assert_eq!(d.as_secs(), 59);
    }

    #[test]
    fn success_delay_stays_within_a_few_percent_of_the_interval() {
        let mut rng = rng();
        let (mut low, mut high) = (Duration::MAX, Duration::ZERO);
        for _ in 0..500 {
            let d = after_success(TIMING, &mut rng);
            low = low.min(d);
            high = high.max(d);
        }
        assert!(low >= Duration::from_secs(3492) && high <= Duration::from_secs(3708));
        assert!(high - low > Duration::from_secs(60), "jitter is applied");
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_interval() {
        let mut rng = rng();
        for (failures, base) in [
            (1, 60),
            (2, 120),
            (3, 240),
            (6, 1920),
            (7, 3600),
            (40, 3600),
        ] {
            for _ in 0..50 {
                let d = after_failure(TIMING, failures, None, &mut rng).as_secs_f64();
                assert!(
                    d >= base as f64 / 2.0 && d <= base as f64,
                    "failure {failures}: {d} outside [{}, {base}]",
                    base / 2
                );
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_but_bounded() {
        let mut rng = rng();
        let d = after_failure(TIMING, 1, Some(Duration::from_secs(900)), &mut rng);
        assert_eq!(d, Duration::from_secs(900));
        let d = after_failure(TIMING, 1, Some(Duration::from_secs(1)), &mut rng);
        assert!(d >= Duration::from_secs(30));
        let d = after_failure(TIMING, 1, Some(Duration::from_secs(10 * 86400)), &mut rng);
        assert_eq!(d, MAX_RETRY_AFTER);
    }
}
