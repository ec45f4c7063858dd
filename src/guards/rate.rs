//! Rate limits per caller: a token bucket for creates and one for chunk
//! requests, keyed by API key, token subject or client address
//! ([`crate::guards::auth::Access::bucket`]). The buckets are the state store's
//! ([`StateStore::take_token`]): in Redis every instance draws from the same
//! ones; the embedded store keeps them in memory.

use std::sync::Arc;

use crate::config::RateLimitSettings;
use crate::core::Error;
use crate::state::{Rate, StateStore, Store};

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
    enabled: bool,
    create: Rate,
    chunk: Rate,
    store: Store,
}

impl RateLimiter {
    pub fn new(settings: &RateLimitSettings, store: &Store) -> RateLimiter {
        RateLimiter {
            inner: Arc::new(Inner {
                enabled: settings.enabled,
                create: Rate::per_second(settings.create_per_second, settings.create_burst),
                chunk: Rate::per_second(settings.chunk_per_second, settings.chunk_burst),
                store: store.clone(),
            }),
        }
    }

    /// Takes one request from `caller`'s bucket, or answers 429 with how long
    /// to wait. If the store cannot be asked, the request goes: the request
    /// itself will meet the same outage and say so.
    pub async fn check(&self, bucket: Bucket, caller: &str) -> Result<(), Error> {
        let inner = &self.inner;
        if !inner.enabled {
            return Ok(());
        }
        let rate = match bucket {
            Bucket::Create => inner.create,
            Bucket::Chunk => inner.chunk,
        };
        let name = format!("{}:{caller}", bucket.name());
        let wait = match inner.store.take_token(&name, rate).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "rate limit not checked: store unavailable");
                None
            }
        };
        match wait {
            None => Ok(()),
            Some(wait) => Err(Error::RateLimited {
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
    use std::time::Duration;

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
            crate::state::embedded::EmbeddedStore::open(
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
            Err(Error::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::from_millis(500));
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Another caller has its own bucket.
        rl.check(Bucket::Create, "ip:5.6.7.8").await.unwrap();
    }
}
