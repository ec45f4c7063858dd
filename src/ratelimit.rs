//! Rate limits per caller: a token bucket for creates and one for chunk
//! requests, keyed by API key, token subject or client address
//! ([`crate::auth::Access::bucket`]). With the Redis store the buckets live in
//! Redis so that every instance draws from the same ones; with the embedded
//! store they live in memory (`governor`).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitSettings;
use crate::error::ApiError;
use crate::store::redis::RedisStore;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Create,
    Chunk,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Create => "create",
            Bucket::Chunk => "chunk",
        }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RateLimitSettings,
    backend: Backend,
    checks: AtomicU64,
}

enum Backend {
    Memory {
        create: DefaultKeyedRateLimiter<String>,
        chunk: DefaultKeyedRateLimiter<String>,
    },
    Redis(RedisStore),
}

fn quota(per_second: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("period is above zero")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is above zero"))
}

impl RateLimiter {
    pub fn new(settings: &RateLimitSettings, store: &Store) -> RateLimiter {
        let backend = match store {
            Store::Redis(redis) => Backend::Redis(redis.clone()),
            Store::Embedded(_) => Backend::Memory {
                create: governor::RateLimiter::keyed(quota(
                    settings.create_per_second,
                    settings.create_burst,
                )),
                chunk: governor::RateLimiter::keyed(quota(
                    settings.chunk_per_second,
                    settings.chunk_burst,
                )),
            },
        };
        RateLimiter {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                backend,
                checks: AtomicU64::new(0),
            }),
        }
    }

    /// Takes one request from `caller`'s bucket, or answers 429 with how long
    /// to wait. If Redis cannot be asked, the request goes: the request itself
    /// will meet the same outage and say so.
    pub async fn check(&self, bucket: Bucket, caller: &str) -> Result<(), ApiError> {
        let s = &self.inner.settings;
        if !s.enabled {
            return Ok(());
        }
        let wait = match &self.inner.backend {
            Backend::Memory { create, chunk } => {
                let limiter = match bucket {
                    Bucket::Create => create,
                    Bucket::Chunk => chunk,
                };
                // Forget idle callers now and then, so memory stays bounded.
                if self.inner.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                match limiter.check_key(&caller.to_string()) {
                    Ok(()) => None,
                    Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
                }
            }
            Backend::Redis(redis) => {
                let (per_second, burst) = match bucket {
                    Bucket::Create => (s.create_per_second, s.create_burst),
                    Bucket::Chunk => (s.chunk_per_second, s.chunk_burst),
                };
                let interval = Duration::from_secs_f64(1.0 / per_second);
                let name = format!("{}:{caller}", bucket.name());
                match redis.take_from_bucket(&name, interval, burst).await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limit not checked: store unavailable");
                        None
                    }
                }
            }
        };
        match wait {
            None => Ok(()),
            Some(wait) => Err(ApiError::RateLimited {
                message: format!(
                    "too many {} requests from this caller; retry in {} s",
                    bucket.name(),
                    wait.as_secs_f64().ceil().max(1.0)
                ),
                retry_after: wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_buckets_allow_the_burst_then_refuse_with_a_wait() {
        let settings = RateLimitSettings {
            enabled: true,
            create_per_second: 1.0,
            create_burst: 3,
            chunk_per_second: 1000.0,
            chunk_burst: 1000,
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Embedded(
            crate::store::embedded::EmbeddedStore::open(
                &dir.path().join("s.redb"),
                crate::config::Durability::Relaxed,
                crate::clock::Clock::system(),
            )
            .unwrap(),
        );
        let rl = RateLimiter::new(&settings, &store);
        for _ in 0..3 {
            rl.check(Bucket::Create, "ip:1.2.3.4").await.unwrap();
        }
        match rl.check(Bucket::Create, "ip:1.2.3.4").await {
            Err(ApiError::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::from_millis(500));
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Another caller has its own bucket.
        rl.check(Bucket::Create, "ip:5.6.7.8").await.unwrap();
    }
}
