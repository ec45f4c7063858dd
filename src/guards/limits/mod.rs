//! What one client may ask of the server, apart from who it is (`auth`):
//! content types and signatures ([`content`]), disk space ([`disk`]), chunk
//! requests in progress ([`inflight`]) and stalled bodies ([`idle_limited`]).
//! Rates per caller are in `ratelimit`.

pub mod content;
pub mod disk;
pub mod inflight;
pub mod reserve;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// Why a chunk body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the connection failed while reading the body")]
    Payload,
    #[error("no bytes arrived for too long")]
    Idle,
}

/// Wraps a request body so that a client sending nothing for `limit` (one byte
/// a minute, say: slowloris) ends it with [`BodyError::Idle`] and sets
/// `stalled`, instead of holding a connection, a lease and buffers forever.
pub fn idle_limited<S, E>(
    body: S,
    limit: Duration,
    stalled: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    Box::pin(futures::stream::unfold(Some(body), move |state| {
        let stalled = stalled.clone();
        async move {
            let mut body = state?;
            match tokio::time::timeout(limit, body.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
                Ok(Some(Err(_))) => Some((Err(BodyError::Payload), None)),
                Ok(None) => None,
                Err(_) => {
                    stalled.store(true, Ordering::Relaxed);
                    Some((Err(BodyError::Idle), None))
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_body_ends_with_idle() {
        let stalled = Arc::new(AtomicBool::new(false));
        let body = futures::stream::iter(vec![Ok::<_, ()>(Bytes::from_static(b"ab"))])
            .chain(futures::stream::pending());
        let mut limited = idle_limited(body, Duration::from_millis(50), stalled.clone());
        assert_eq!(
            limited.next().await.unwrap().unwrap(),
            Bytes::from_static(b"ab")
        );
        assert!(matches!(limited.next().await, Some(Err(BodyError::Idle))));
        assert!(limited.next().await.is_none());
        assert!(stalled.load(Ordering::Relaxed));
    }
}
