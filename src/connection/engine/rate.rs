//! Flood control: token buckets over the frames a peer sends, and what happens when one runs
//! dry ([`RatePolicy`]). Pure: the time comes from the caller.
//!
//! A bucket holds up to `burst` tokens and refills at `per_second`. Every application frame
//! (message, request, reply) takes one message token; every frame takes its length in byte
//! tokens. Under [`RatePolicy::Slow`] a frame always passes and may leave the bucket in debt;
//! the driver then reads nothing more until the debt is paid ([`Rate::paid_at`]), so a
//! flooding peer is held back by its own transport's flow control. Under
//! [`RatePolicy::Close`] a frame that finds too few tokens is a violation.

use std::time::{Duration, Instant};

use crate::config::{Bucket, RateLimit, RatePolicy};
use crate::error::Limited;

/// Token counts are kept in nano-tokens (a token is `NANO`), so that refilling by the
/// nanosecond is exact integer arithmetic.
const NANO: i128 = 1_000_000_000;

/// The live state of one [`Bucket`].
#[derive(Debug)]
struct Level {
    per_second: i128,
    burst: i128,
    /// In nano-tokens; negative while in debt.
    tokens: i128,
    at: Instant,
}

impl Level {
    fn new(bucket: Bucket, now: Instant) -> Level {
        // A zero rate would never refill: treat it as the slowest rate that still does.
        let burst = i128::from(bucket.burst.max(1)) * NANO;
        Level {
            per_second: i128::from(bucket.per_second.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let elapsed = i128::try_from(now.duration_since(self.at).as_nanos()).unwrap_or(i128::MAX);
            let added = elapsed.saturating_mul(self.per_second);
            self.tokens = self.tokens.saturating_add(added).min(self.burst);
            self.at = now;
        }
    }

    /// When the bucket is out of debt, if it is in debt now.
    fn paid_at(&self) -> Option<Instant> {
        (self.tokens < 0).then(|| {
            let nanos = (-self.tokens + self.per_second - 1) / self.per_second;
            self.at + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        })
    }
}

/// A session's flood control.
#[derive(Debug)]
pub(crate) struct Rate {
    messages: Option<Level>,
    bytes: Option<Level>,
    policy: RatePolicy,
}

impl Rate {
    pub(crate) fn new(limit: &RateLimit, now: Instant) -> Rate {
        Rate {
            messages: limit.messages.map(|bucket| Level::new(bucket, now)),
            bytes: limit.bytes.map(|bucket| Level::new(bucket, now)),
            policy: limit.policy,
        }
    }

    /// Takes the tokens for a frame of `len` octets (`message`: an application frame).
    /// `Err` names the bucket that ran dry under [`RatePolicy::Close`].
    pub(crate) fn charge(&mut self, now: Instant, message: bool, len: usize) -> Result<(), Limited> {
        let charges = [
            (self.messages.as_mut().filter(|_| message), 1, Limited::Messages),
            (self.bytes.as_mut(), len, Limited::Bytes),
        ];
        let close = self.policy == RatePolicy::Close;
        for (level, cost, which) in charges {
            let Some(level) = level else { continue };
            level.refill(now);
            let cost = i128::try_from(cost).unwrap_or(i128::MAX).saturating_mul(NANO);
            if close && level.tokens < cost.min(level.burst) {
                return Err(which);
            }
            level.tokens = level.tokens.saturating_sub(cost);
        }
        Ok(())
    }

    /// The time at which every bucket is out of debt, if the last frame left one in debt
    /// (under [`RatePolicy::Slow`]); it may have passed.
    pub(crate) fn paid_at(&self) -> Option<Instant> {
        let levels = [self.messages.as_ref(), self.bytes.as_ref()];
        levels.into_iter().flatten().filter_map(Level::paid_at).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(policy: RatePolicy) -> RateLimit {
        RateLimit::new(policy).messages(10, 3)
    }

    #[test]
    fn slow_lets_the_burst_through_then_pauses_for_the_debt() {
        let t0 = Instant::now();
        let mut rate = Rate::new(&limit(RatePolicy::Slow), t0);
        for _ in 0..3 {
            assert_eq!(rate.charge(t0, true, 10), Ok(()));
            assert_eq!(rate.paid_at(), None);
        }
        assert_eq!(rate.charge(t0, true, 10), Ok(()));
        let until = rate.paid_at().expect("in debt after the burst");
        assert_eq!(until.duration_since(t0), Duration::from_millis(100));
        assert_eq!(rate.charge(until, true, 10), Ok(()), "refilled by then");
        assert_eq!(rate.paid_at(), Some(until + Duration::from_millis(100)));
    }

    #[test]
    fn close_refuses_the_frame_that_finds_the_bucket_empty_and_refills_with_time() {
        let t0 = Instant::now();
        let mut rate = Rate::new(&limit(RatePolicy::Close), t0);
        for _ in 0..3 {
            assert_eq!(rate.charge(t0, true, 10), Ok(()));
        }
        assert_eq!(rate.charge(t0, true, 10), Err(Limited::Messages));
        assert_eq!(rate.charge(t0 + Duration::from_millis(100), true, 10), Ok(()));
        assert_eq!(
            rate.paid_at(),
            None,
            "the close policy never leaves debt below a burst"
        );
    }

    #[test]
    fn a_frame_larger_than_the_byte_burst_passes_a_full_bucket_and_leaves_debt() {
        let t0 = Instant::now();
        let limit = RateLimit::new(RatePolicy::Close).bytes(1000, 100);
        let mut rate = Rate::new(&limit, t0);
        assert_eq!(rate.charge(t0, true, 500), Ok(()));
        assert_eq!(rate.charge(t0, true, 1), Err(Limited::Bytes));
        let later = t0 + Duration::from_millis(500);
        assert_eq!(rate.charge(later, true, 1), Ok(()));
    }
}
