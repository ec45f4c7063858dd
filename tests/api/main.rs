//! Integration tests: the real server, over HTTP, from outside, on the
//! embedded state store. `tests/api_redis.rs` runs the same modules on Redis.

/// The state store every app of this test crate runs on.
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

mod abort;
mod auth;
mod chunks;
mod complete;
mod cors;
mod create;
mod curl;
mod download;
mod events;
mod files;
mod forwarded;
mod framing;
mod helpers;
mod hooks;
mod hostile;
mod janitor;
mod limits;
mod owners;
mod processing;
mod restart;
mod security;
mod service;
mod smoke;
mod spec_hooks;
mod spec_processing;
mod spec_sse;
mod sse;
mod sse_client;
mod status;
mod tus;
mod tus_auth;
mod tus_client;
mod tus_concat;
mod tus_config;
mod tus_ext;
mod tus_faults;
mod tus_metadata;
mod tus_wire;
