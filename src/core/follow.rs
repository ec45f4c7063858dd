//! Following one upload live: the stream behind
//! `GET /api/v1/uploads/{id}/events`. It reads the record when told it
//! changed ([`crate::core::notify`], for changes this instance makes) and at
//! a fixed interval (for changes another instance sharing the store makes),
//! never more often than [`MIN_GAP`], and turns what it read into events by
//! [`watch::changes`]. It ends when nothing more can happen, or when the
//! server starts to stop.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};
use uuid::Uuid;

use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::watch::{changes, Cursor, Phase, WatchEvent};
use crate::core::{Error, Subscription};
use crate::state::StateStore;
use crate::upload::{Status, UploadRecord};

/// How often a follower reads the record without being told: what bounds
/// the delay of a change made through another instance.
const POLL: Duration = Duration::from_secs(1);

/// The least time between two reads of one follower: bursts of chunks make
/// one progress event per this, plenty for a progress bar, and a store
/// read per follower per this at most.
const MIN_GAP: Duration = Duration::from_millis(250);

/// What a follower yields.
#[derive(Debug, Clone)]
pub enum Update {
    /// An event, its id, and the record it shows.
    Event {
        kind: WatchEvent,
        id: String,
        record: Box<UploadRecord>,
    },
    /// Nothing happened for a while: a line that keeps proxies from
    /// closing an idle connection.
    Heartbeat,
}

/// How a follow begins.
pub enum Opening {
    /// `Last-Event-ID` already reflects the end: nothing more to send.
    Ended,
    Stream(BoxStream<'static, Update>),
}

/// Starts following upload `id` for a client that last saw the event
/// `last_event_id` (or none). The caller checked the credentials.
pub async fn follow(
    ctx: &AppContext,
    id: Uuid,
    last_event_id: Option<&str>,
) -> Result<Opening, Error> {
    let last = last_event_id.and_then(Cursor::parse);
    let seen_end = last.filter(Cursor::is_final);
    // Failed, aborted, expired, gone: nothing can change any more.
    if seen_end.is_some_and(|l| l.phase != Phase::Completed) {
        return Ok(Opening::Ended);
    }
    // Subscribed before the first read: a change between the two is not lost.
    let subscription = ctx.watchers.subscribe(id);
    let record = ctx
        .store
        .get_upload(id)
        .await
        .map_err(|e| store_error(ctx, e))?;
    let Some(record) = record else {
        return match seen_end {
            Some(_) => Ok(Opening::Ended),
            None => Err(Error::UploadNotFound(id.to_string())),
        };
    };
    // The last report ended the stream, unless a worker reported again
    // since (it processed the file again): that report is then sent.
    if seen_end.is_some_and(|l| record.processing.as_ref().map(|p| p.revision) == Some(l.revision))
    {
        return Ok(Opening::Ended);
    }
    resume_if_stuck(ctx, Some(&record)).await;
    let heartbeat = ctx.settings.events.sse_heartbeat;
    let now = Instant::now();
    let mut follower = Follower {
        ctx: ctx.clone(),
        id,
        subscription,
        last,
        record: None,
        queue: VecDeque::new(),
        ended: false,
        last_read: now,
        read_at: None,
        heartbeat: ticker(now, heartbeat),
        poll: ticker(now, POLL),
    };
    follower.saw(Some(record));
    let stream = futures::stream::unfold(follower, |mut f| async move {
        let update = f.next().await?;
        Some((update, f))
    });
    Ok(Opening::Stream(stream.boxed()))
}

fn ticker(now: Instant, every: Duration) -> Interval {
    let mut ticker = interval_at(now + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

struct Follower {
    ctx: AppContext,
    id: Uuid,
    subscription: Subscription,
    /// What the client has been sent (or said it saw).
    last: Option<Cursor>,
    /// The record last read, shown again if it vanishes.
    record: Option<UploadRecord>,
    queue: VecDeque<Update>,
    /// The last event is queued: the stream ends once it is sent.
    ended: bool,
    last_read: Instant,
    /// A read is due then.
    read_at: Option<Instant>,
    heartbeat: Interval,
    poll: Interval,
}

impl Follower {
    async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(update) = self.queue.pop_front() {
                if matches!(update, Update::Event { .. }) {
                    self.heartbeat.reset();
                }
                return Some(update);
            }
            if self.ended {
                return None;
            }
            let read_at = self.read_at;
            tokio::select! {
                biased;
                () = self.ctx.stopping.cancelled() => return None,
                () = sleep_until(read_at) => self.read().await,
                () = self.subscription.changed() => self.due(),
                _ = self.poll.tick() => self.due(),
                _ = self.heartbeat.tick() => return Some(Update::Heartbeat),
            }
        }
    }

    /// A read is due as soon as the gap since the last one allows (one due
    /// already stays: it was set since the last read, so it is no later).
    fn due(&mut self) {
        let at = (self.last_read + MIN_GAP).max(Instant::now());
        self.read_at.get_or_insert(at);
    }

    async fn read(&mut self) {
        self.read_at = None;
        self.last_read = Instant::now();
        match self.ctx.store.get_upload(self.id).await {
            Ok(record) => {
                resume_if_stuck(&self.ctx, record.as_ref()).await;
                self.saw(record)
            }
            // The store is away for now: the next poll tries again.
            Err(e) => {
                tracing::debug!(upload_id = %self.id, error = %e, "SSE read failed");
                self.ctx.metrics.store_errors.inc();
            }
        }
    }

    /// Queues what changed from what the client saw to `record`.
    fn saw(&mut self, record: Option<UploadRecord>) {
        let now = match (&record, &self.last, &self.record) {
            (Some(rec), _, _) => Cursor::of(rec, self.ctx.clock.now_ms()),
            (None, Some(last), Some(_)) => Cursor::vanished(last),
            // Gone before anything was seen of it here: nothing to show.
            (None, _, _) => {
                self.ended = true;
                return;
            }
        };
        if let Some(rec) = record {
            self.record = Some(rec);
        }
        let shown = self.record.clone().expect("a record was seen");
        for (kind, cursor) in changes(self.last.as_ref(), &now) {
            self.queue.push_back(Update::Event {
                kind,
                id: cursor.encode(),
                record: Box::new(shown.clone()),
            });
        }
        self.last = Some(now);
        self.ended = now.is_final();
    }
}

/// A follower waits for the end of an assembly as a client polling the
/// status does, so it starts again one that died with its process, as the
/// poll does ([`crate::core::status`]).
async fn resume_if_stuck(ctx: &AppContext, record: Option<&UploadRecord>) {
    if let Some(rec) = record.filter(|r| r.status == Status::Assembling) {
        crate::core::resume_assembly(ctx, rec.id).await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
