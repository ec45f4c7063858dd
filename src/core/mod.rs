//! The upload's life, as plain functions over [`AppContext`]: create, write
//! chunks (API v1) or write at an offset (`append`: tus), concatenate,
//! complete (assemble), abort, delete the file, and the bookkeeping between
//! them (idempotency, quotas, leases, the running hash). Nothing here knows
//! HTTP: errors are [`Error`]s with stable codes, and each front end
//! (`http::v1`, `http::tus`) turns calls and answers into its protocol.
//!
//! [`AppContext`]: crate::context::AppContext

mod abort;
mod append;
mod catch_up;
mod chunks;
mod complete;
mod concat;
mod create;
mod dedup;
mod delete;
mod error;
mod files;
mod follow;
mod hooks;
mod idempotency;
mod lease;
mod live;
mod notify;
mod processing;
mod quota;
mod scrub;
mod usage;
mod watch;
mod write;

use std::time::Duration;

pub use abort::abort;
pub use append::{append, settle, Append};
pub use catch_up::spawn_catch_up;
pub use chunks::{put_chunk, DigestCheck};
pub use complete::{complete, resume_assembly, status, Completion};
pub use concat::concatenate;
pub use create::{create, create_as, create_sequential};
pub use delete::{delete_file, file_deleted, read_file_then_delete, Deletion};
pub use error::Error;
pub use files::{completed_file, read_file};
pub use follow::{follow, Opening, Update};
pub use idempotency::idempotency_key;
pub use notify::{notify, Subscription, Watchers};
pub use processing::report_processing;
pub use quota::UseLimit;
pub use scrub::scrub;
pub use usage::{record_gone, usage_report, Caller};
pub use watch::{Cursor, Phase, WatchEvent};

/// How long a lease lasts unless renewed. Holders renew it every third of
/// this while they work, so a holder that died (or lost the store) frees it
/// within this time, while a slow chunk or a long assembly keeps it.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// The lease of a write at an offset lasts less: a tus client whose server
/// was killed mid-PATCH retries within seconds (tus-js-client: after 0, 1,
/// 3 and 5 s) and must find the dead holder's lease lapsed by then.
const APPEND_LEASE_TTL: Duration = Duration::from_secs(4);

/// How long a lease of `of` lasts unless renewed.
fn lease_ttl(of: &crate::state::LeaseOf) -> Duration {
    match of {
        crate::state::LeaseOf::Append(_) => APPEND_LEASE_TTL,
        _ => LEASE_TTL,
    }
}
