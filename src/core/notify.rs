//! In-process notices that an upload's record changed, for whoever follows it
//! live (the SSE stream of `GET /api/v1/uploads/{id}/events`). The core calls
//! [`notify`] after each transition it makes; a follower then reads the
//! record again at once instead of at its next poll. A notice carries no
//! state, only "look again": the store stays the one truth, and changes made
//! by another instance sharing the store are seen by the follower's poll.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use uuid::Uuid;

use crate::context::AppContext;

/// One channel per upload that someone follows, created by the first
/// follower and removed with the last: a notice for an upload nobody follows
/// costs one map lookup.
#[derive(Clone, Default)]
pub struct Watchers {
    /// Read-locked by every notice (each recorded chunk), write-locked only
    /// when a follower comes or goes.
    channels: Arc<RwLock<HashMap<Uuid, watch::Sender<()>>>>,
}

impl Watchers {
    /// Starts following `id`: the subscription's `changed()` wakes after
    /// each notice.
    pub fn subscribe(&self, id: Uuid) -> Subscription {
        let mut channels = self.channels.write().expect("watchers poisoned");
        let rx = channels
            .entry(id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        Subscription {
            id,
            rx,
            watchers: self.clone(),
        }
    }

    /// Wakes every follower of `id`, if any.
    pub fn notify(&self, id: Uuid) {
        let channels = self.channels.read().expect("watchers poisoned");
        if let Some(tx) = channels.get(&id) {
            tx.send_replace(());
        }
    }

    /// How many uploads have followers.
    pub fn followed(&self) -> usize {
        self.channels.read().expect("watchers poisoned").len()
    }
}

/// A follower's end; dropping the last one of an upload removes its channel.
pub struct Subscription {
    id: Uuid,
    rx: watch::Receiver<()>,
    watchers: Watchers,
}

impl Subscription {
    /// Waits for the next notice (at once if one came since the last call).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives in the map as long as a subscription does;
            // should it ever go, wait for the poll rather than spin.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.watchers.channels.write().expect("watchers poisoned");
        // Under the lock no one subscribes meanwhile; this receiver still counts.
        if channels
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            channels.remove(&self.id);
        }
    }
}

/// Tells live followers of upload `id` that its record changed. Cheap and
/// synchronous: call it after any transition of the record.
pub fn notify(ctx: &AppContext, id: Uuid) {
    ctx.watchers.notify(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notice_wakes_followers_of_that_upload_only() {
        let watchers = Watchers::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut follow_a = watchers.subscribe(a);
        let mut follow_b = watchers.subscribe(b);
        watchers.notify(a);
        let woke = tokio::time::timeout(std::time::Duration::from_secs(1), follow_a.changed());
        assert!(woke.await.is_ok());
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(50), follow_b.changed());
        assert!(quiet.await.is_err(), "b was not notified");
    }

    #[test]
    fn the_last_follower_gone_removes_the_channel() {
        let watchers = Watchers::default();
        let id = Uuid::new_v4();
        let first = watchers.subscribe(id);
        let second = watchers.subscribe(id);
        assert_eq!(watchers.followed(), 1);
        drop(first);
        assert_eq!(watchers.followed(), 1);
        drop(second);
        assert_eq!(watchers.followed(), 0);
        // A notice for an upload nobody follows is a no-op.
        watchers.notify(id);
        assert_eq!(watchers.followed(), 0);
    }
}
