//! The clock every time-dependent rule reads (expiry, tombstones, leases and
//! rate buckets of the embedded store, the janitor): the system's, or in tests
//! one that can be moved forward, so that a test makes time pass instead of
//! sleeping.
//!
//! Redis keeps its own time for what it expires by itself (leases, rate
//! buckets, keys' TTLs), so that every instance agrees; advancing this clock
//! does not reach those. Expiry of uploads is decided by this clock on every
//! backend: the record's `expires_at` and the janitor's sweep compare against
//! it, and Redis's own TTLs lag a day behind (`KEY_GRACE_MS`) as a backstop.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Wall-clock time in Unix milliseconds (or microseconds). Cheap to clone;
/// clones of an adjustable clock move together.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// µs added to the system's time; `None` for the system clock, which
    /// cannot be moved.
    offset_us: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { offset_us: None }
    }

    /// The system's clock plus an offset that [`Clock::advance`] moves
    /// forward: until advanced it reads like the system clock, so code under
    /// test behaves as in production.
    pub fn adjustable() -> Clock {
        Clock {
            offset_us: Some(Arc::default()),
        }
    }

    /// Unix time in microseconds.
    pub fn now_us(&self) -> i64 {
        let system = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        system
            + self
                .offset_us
                .as_ref()
                .map_or(0, |o| o.load(Ordering::Relaxed))
    }

    /// Unix time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.now_us().div_euclid(1000)
    }

    /// Makes `by` pass at once, for every clone of this clock.
    ///
    /// # Panics
    /// On the system clock: production time only moves by itself.
    pub fn advance(&self, by: Duration) {
        let offset = self
            .offset_us
            .as_ref()
            .expect("only an adjustable clock can be advanced");
        offset.fetch_add(by.as_micros() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_with_its_clones() {
        let clock = Clock::adjustable();
        let other = clock.clone();
        let before = clock.now_ms();
        other.advance(Duration::from_secs(3600));
        let after = clock.now_ms();
        assert!((3_600_000..3_660_000).contains(&(after - before)));
        assert!(Clock::system().now_ms() < after);
    }

    #[test]
    #[should_panic(expected = "adjustable")]
    fn the_system_clock_cannot_be_advanced() {
        Clock::system().advance(Duration::from_secs(1));
    }
}
