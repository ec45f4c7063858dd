//! The delivery task: drains the outbox to every sink, started beside the
//! janitor when `[events]` names a sink.
//!
//! An entry leaves the outbox once every sink that wants it took it (or gave
//! it up as dead), so delivery is at least once: a crash before the
//! acknowledgement, or a sink that took it but answered too late, means the
//! event comes again, with the same id. Order is kept per upload and per
//! sink: while an upload's event waits for a retry, its later events wait
//! behind it for that sink, and other uploads' events go on.
//!
//! Which sinks took which entry is kept in memory only: after a restart an
//! entry that some sinks took already goes to them again (at least once).
//!
//! Instances sharing a store take turns through a lease
//! ([`LeaseOf::Delivery`]): one delivers, the others wait, and take over
//! within `LEASE_TTL` of its death.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sinks::{AnySink, Sink};
use super::{Event, OutboxEntry};
use crate::context::AppContext;
use crate::state::{Lease, LeaseOf, StateStore};

/// Entries looked at per pass, oldest first.
const BATCH: usize = 256;
/// The first retry's wait; each further one waits twice as long, up to
/// `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long the delivery lease lasts unless renewed (every pass renews it).
const LEASE_TTL: Duration = Duration::from_secs(10);

struct Retry {
    first_failed: Instant,
    attempts: u32,
    next: Instant,
}

/// Runs until `shutdown`.
pub async fn run(ctx: AppContext, sinks: Vec<AnySink>, shutdown: CancellationToken) {
    let mut delivery = Delivery {
        ctx,
        sinks,
        taken: HashMap::new(),
        retries: HashMap::new(),
        dropped_seen: 0,
    };
    let poll = delivery.ctx.settings.events.poll_interval;
    let mut lease: Option<Lease> = None;
    while !shutdown.is_cancelled() {
        lease = hold(&delivery.ctx, lease).await;
        let progressed = match &lease {
            // Another instance delivers.
            None => false,
            Some(_) => match delivery.pass().await {
                Ok(progressed) => progressed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event outbox; retrying");
                    false
                }
            },
        };
        if !progressed {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }
    if let Some(lease) = lease {
        // The next instance need not wait for the lease to lapse.
        let _ = delivery.ctx.store.release(&lease).await;
    }
}

/// Renews the delivery lease, or tries to take it; `None` while another
/// instance holds it (or the store cannot say).
async fn hold(ctx: &AppContext, lease: Option<Lease>) -> Option<Lease> {
    if let Some(lease) = lease {
        if ctx.store.renew(&lease, LEASE_TTL).await.unwrap_or(false) {
            return Some(lease);
        }
        tracing::warn!("lost the event delivery lease; another instance delivers");
    }
    ctx.store
        .try_lease(LeaseOf::Delivery, LEASE_TTL)
        .await
        .ok()
        .flatten()
}

struct Delivery {
    ctx: AppContext,
    sinks: Vec<AnySink>,
    /// Entry position → which sinks took it (or need not).
    taken: HashMap<String, Vec<bool>>,
    /// (sink, entry position) → its failures so far.
    retries: HashMap<(usize, String), Retry>,
    dropped_seen: u64,
}

impl Delivery {
    /// One pass over the oldest entries; returns whether anything moved.
    async fn pass(&mut self) -> Result<bool, crate::state::StoreError> {
        let metrics = &self.ctx.metrics.events;
        let dropped = super::DROPPED.load(Ordering::Relaxed);
        metrics.dropped.inc_by(dropped - self.dropped_seen);
        self.dropped_seen = dropped;
        let entries = self.ctx.store.pending_events(BATCH).await?;
        // A batch shorter than asked for is the whole outbox: no count to ask.
        let backlog = if entries.len() < BATCH {
            entries.len() as u64
        } else {
            self.ctx.store.outbox_len().await?
        };
        metrics.backlog.set(backlog as i64);
        // Entries no longer pending were acknowledged: forget them.
        let pending: HashSet<&str> = entries.iter().map(|e| e.position.as_str()).collect();
        self.taken.retain(|p, _| pending.contains(p.as_str()));
        self.retries
            .retain(|(_, p), _| pending.contains(p.as_str()));
        let mut blocked: Vec<HashSet<Uuid>> = vec![HashSet::new(); self.sinks.len()];
        let mut progressed = false;
        for entry in &entries {
            progressed |= self.offer(entry, &mut blocked).await;
            let all_taken = self.taken[&entry.position].iter().all(|t| *t);
            if all_taken {
                self.ctx.store.ack_event(&entry.position).await?;
                self.taken.remove(&entry.position);
                progressed = true;
            }
        }
        Ok(progressed)
    }

    /// Offers one entry to every sink that has not taken it and is not
    /// waiting on an earlier event of the same upload.
    async fn offer(&mut self, entry: &OutboxEntry, blocked: &mut [HashSet<Uuid>]) -> bool {
        let stored = &entry.event;
        // Rendered for the first sink it is offered to: an entry every sink
        // took already, or that waits behind a retry, is not.
        let mut rendered: Option<(Event, String)> = None;
        let taken = self
            .taken
            .entry(entry.position.clone())
            .or_insert_with(|| vec![false; self.sinks.len()]);
        let metrics = &self.ctx.metrics.events;
        let mut progressed = false;
        for (i, sink) in self.sinks.iter().enumerate() {
            if taken[i] || blocked[i].contains(&stored.upload) {
                continue;
            }
            if !sink.wants(stored.kind) {
                taken[i] = true;
                continue;
            }
            let key = (i, entry.position.clone());
            let now = Instant::now();
            if self.retries.get(&key).is_some_and(|r| r.next > now) {
                blocked[i].insert(stored.upload);
                continue;
            }
            let (event, body) = rendered.get_or_insert_with(|| {
                let event = Event::render(stored, |id| file_url(&self.ctx, id));
                let body = serde_json::to_string(&event).expect("events always serialise");
                (event, body)
            });
            match sink.deliver(event, body).await {
                Ok(()) => {
                    taken[i] = true;
                    self.retries.remove(&key);
                    metrics.delivered.with_label_values(&[sink.name()]).inc();
                    progressed = true;
                }
                Err(e) => {
                    let retry = self.retries.entry(key.clone()).or_insert(Retry {
                        first_failed: now,
                        attempts: 0,
                        next: now,
                    });
                    retry.attempts += 1;
                    if now.duration_since(retry.first_failed) >= sink.retry_for() {
                        tracing::error!(
                            sink = sink.name(), event_id = %event.id, event_type = stored.kind.as_str(),
                            upload_id = %stored.upload, attempts = retry.attempts, error = %e,
                            "event given up: the sink did not take it within its retry time"
                        );
                        metrics.dead.with_label_values(&[sink.name()]).inc();
                        self.retries.remove(&key);
                        taken[i] = true;
                        progressed = true;
                    } else {
                        let wait = backoff(retry.attempts);
                        retry.next = now + wait;
                        tracing::warn!(
                            sink = sink.name(), event_id = %event.id, upload_id = %stored.upload,
                            attempt = retry.attempts, retry_in_ms = wait.as_millis() as u64,
                            error = %e, "event delivery failed; will retry"
                        );
                        metrics
                            .failed_attempts
                            .with_label_values(&[sink.name()])
                            .inc();
                        blocked[i].insert(stored.upload);
                    }
                }
            }
        }
        progressed
    }
}

/// The wait after the `attempts`-th failure.
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// A file's URL as `file.url` gives it: absolute with `public_url`, else
/// relative.
fn file_url(ctx: &AppContext, id: Uuid) -> String {
    let base = ctx.settings.public_url.as_deref().unwrap_or("");
    format!("{}/api/v1/files/{id}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
