//! What a live follower of an upload (the SSE stream) is told, as plain
//! functions: where the upload stands ([`Cursor`]), which events take a
//! follower from what it last saw to that ([`changes`]), and when nothing
//! more can happen ([`Cursor::is_final`]).
//!
//! A cursor is also each event's id: a client that reconnects with
//! `Last-Event-ID` gets only what changed since, so a progress it saw is not
//! sent again and a completion or a report it missed is.

use crate::upload::{Status, UploadRecord};
use crate::wire::ProcessingState;

/// Where an upload's life is, as a follower sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Uploading,
    Assembling,
    Completed,
    Failed,
    Aborted,
    /// Expired, or swept by the janitor while not completed.
    Expired,
    /// The completed file's record is gone (deleted, or its retention
    /// ended): nothing more to tell.
    Gone,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::Uploading,
        Phase::Assembling,
        Phase::Completed,
        Phase::Failed,
        Phase::Aborted,
        Phase::Expired,
        Phase::Gone,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Phase::Uploading => "uploading",
            Phase::Assembling => "assembling",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
            Phase::Expired => "expired",
            Phase::Gone => "gone",
        }
    }
}

/// The state one event reflects: phase, bytes received, and the worker's
/// report (its revision, and whether it was the last one a worker sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub phase: Phase,
    pub bytes: u64,
    pub revision: u64,
    /// The report said `completed` or `failed`.
    pub processed: bool,
}

impl Cursor {
    /// Where `rec` stands at `now_ms`.
    pub fn of(rec: &UploadRecord, now_ms: i64) -> Cursor {
        let phase = if rec.is_expired(now_ms) {
            Phase::Expired
        } else {
            match rec.status {
                Status::Uploading => Phase::Uploading,
                Status::Assembling => Phase::Assembling,
                Status::Completed => Phase::Completed,
                Status::Failed => Phase::Failed,
                Status::Aborted => Phase::Aborted,
            }
        };
        let processing = rec.processing.as_ref();
        Cursor {
            phase,
            bytes: rec.bytes_received,
            revision: processing.map_or(0, |p| p.revision),
            processed: processing.is_some_and(|p| {
                matches!(
                    p.state,
                    ProcessingState::Completed | ProcessingState::Failed
                )
            }),
        }
    }

    /// Where an upload whose record is no longer there stands, after `last`.
    pub fn vanished(last: &Cursor) -> Cursor {
        let phase = match last.phase {
            Phase::Uploading | Phase::Failed | Phase::Expired => Phase::Expired,
            Phase::Aborted => Phase::Aborted,
            Phase::Assembling | Phase::Completed | Phase::Gone => Phase::Gone,
        };
        Cursor { phase, ..*last }
    }

    /// Nothing more can happen: the stream ends after this.
    pub fn is_final(&self) -> bool {
        match self.phase {
            Phase::Failed | Phase::Aborted | Phase::Expired | Phase::Gone => true,
            Phase::Completed => self.processed,
            Phase::Uploading | Phase::Assembling => false,
        }
    }

    /// The event id: opaque to clients, read back by [`Cursor::parse`].
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}{}",
            self.phase.as_str(),
            self.bytes,
            self.revision,
            if self.processed { ".end" } else { "" }
        )
    }

    /// A `Last-Event-ID`; `None` if it is not one of ours (then the client
    /// is told everything, as on a first connection).
    pub fn parse(id: &str) -> Option<Cursor> {
        let mut parts = id.trim().split('.');
        let phase = parts.next()?;
        let phase = Phase::ALL.into_iter().find(|p| p.as_str() == phase)?;
        let bytes = parts.next()?.parse().ok()?;
        let revision = parts.next()?.parse().ok()?;
        let processed = match parts.next() {
            None => false,
            Some("end") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Cursor {
            phase,
            bytes,
            revision,
            processed,
        })
    }
}

/// An event of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEvent {
    Progress,
    Completed,
    Failed,
    Aborted,
    Expired,
    Processing,
}

impl WatchEvent {
    /// The SSE `event:` name.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEvent::Progress => "upload.progress",
            WatchEvent::Completed => "upload.completed",
            WatchEvent::Failed => "upload.failed",
            WatchEvent::Aborted => "upload.aborted",
            WatchEvent::Expired => "upload.expired",
            WatchEvent::Processing => "upload.processing",
        }
    }
}

/// The events that take a follower who last saw `last` (nothing: `None`) to
/// `now`, each with the cursor it reflects, in order: the upload's own
/// state first, then the worker's report. Bytes that moved while the phase
/// stayed are one progress, however many chunks it took.
pub fn changes(last: Option<&Cursor>, now: &Cursor) -> Vec<(WatchEvent, Cursor)> {
    let (seen_revision, seen_processed) = last.map_or((0, false), |l| (l.revision, l.processed));
    let report = now.revision != seen_revision && now.revision > 0;
    let mut out = Vec::new();
    let moved = last.is_none_or(|l| l.phase != now.phase || l.bytes != now.bytes);
    if moved {
        let kind = match now.phase {
            Phase::Uploading | Phase::Assembling => Some(WatchEvent::Progress),
            Phase::Completed => Some(WatchEvent::Completed),
            Phase::Failed => Some(WatchEvent::Failed),
            Phase::Aborted => Some(WatchEvent::Aborted),
            Phase::Expired => Some(WatchEvent::Expired),
            Phase::Gone => None,
        };
        // Sent before the report, this event reflects the report seen before.
        let reflects = if report {
            Cursor {
                revision: seen_revision,
                processed: seen_processed,
                ..*now
            }
        } else {
            *now
        };
        out.extend(kind.map(|k| (k, reflects)));
    }
    if report {
        out.push((WatchEvent::Processing, *now));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: Phase, bytes: u64, revision: u64, processed: bool) -> Cursor {
        Cursor {
            phase,
            bytes,
            revision,
            processed,
        }
    }

    fn kinds(events: &[(WatchEvent, Cursor)]) -> Vec<WatchEvent> {
        events.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn a_first_connection_gets_the_state_then_the_report() {
        let now = at(Phase::Completed, 10, 2, false);
        let events = changes(None, &now);
        assert_eq!(
            kinds(&events),
            [WatchEvent::Completed, WatchEvent::Processing]
        );
        // The completion's id does not claim the report: a client cut off
        // between the two gets the report on reconnect.
        assert_eq!(events[0].1, at(Phase::Completed, 10, 0, false));
        assert_eq!(changes(Some(&events[0].1), &now), [events[1]]);
        assert_eq!(events[1].1, now);
        let fresh = at(Phase::Uploading, 0, 0, false);
        assert_eq!(kinds(&changes(None, &fresh)), [WatchEvent::Progress]);
    }

    #[test]
    fn what_was_seen_is_not_sent_again() {
        let seen = at(Phase::Uploading, 1024, 0, false);
        assert!(changes(Some(&seen), &seen).is_empty());
        let more = at(Phase::Uploading, 4096, 0, false);
        assert_eq!(changes(Some(&seen), &more), [(WatchEvent::Progress, more)]);
        let done = at(Phase::Completed, 4096, 0, false);
        assert_eq!(changes(Some(&seen), &done), [(WatchEvent::Completed, done)]);
        let reported = at(Phase::Completed, 4096, 3, false);
        assert_eq!(
            changes(Some(&at(Phase::Completed, 4096, 2, false)), &reported),
            [(WatchEvent::Processing, reported)]
        );
    }

    #[test]
    fn each_end_has_its_event() {
        let seen = at(Phase::Uploading, 5, 0, false);
        for (phase, kind) in [
            (Phase::Failed, WatchEvent::Failed),
            (Phase::Aborted, WatchEvent::Aborted),
            (Phase::Expired, WatchEvent::Expired),
        ] {
            let now = at(phase, 5, 0, false);
            assert_eq!(changes(Some(&seen), &now), [(kind, now)]);
            assert!(now.is_final());
        }
        let completed = at(Phase::Completed, 5, 1, false);
        let gone = Cursor::vanished(&completed);
        assert_eq!(gone.phase, Phase::Gone);
        assert!(changes(Some(&completed), &gone).is_empty());
        assert!(gone.is_final());
        assert_eq!(Cursor::vanished(&seen).phase, Phase::Expired);
    }

    #[test]
    fn a_completed_upload_ends_with_its_last_report_only() {
        assert!(!at(Phase::Completed, 1, 0, false).is_final());
        assert!(!at(Phase::Completed, 1, 4, false).is_final());
        assert!(at(Phase::Completed, 1, 5, true).is_final());
        assert!(!at(Phase::Uploading, 1, 0, false).is_final());
        assert!(!at(Phase::Assembling, 1, 0, false).is_final());
    }

    #[test]
    fn ids_read_back_and_strangers_are_ignored() {
        for cursor in [
            at(Phase::Uploading, 0, 0, false),
            at(Phase::Completed, u64::MAX, 7, true),
            at(Phase::Gone, 3, 1, false),
        ] {
            assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        }
        assert_eq!(
            at(Phase::Completed, 10, 2, true).encode(),
            "completed.10.2.end"
        );
        for stranger in [
            "",
            "42",
            "uploading",
            "uploading.x.0",
            "done.1.0",
            "completed.1.2.fin",
            "completed.1.2.end.more",
        ] {
            assert_eq!(Cursor::parse(stranger), None, "{stranger:?}");
        }
    }
}
