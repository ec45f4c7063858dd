//! The behavioural battery of `tests/api/` (the very same modules) on the
//! Redis state store: every app gets a private redis-server on a free loopback
//! port. Plus what only Redis can do: several tranche processes sharing one
//! store, and the store going away and coming back (`redis_faults`).
//!
//! Needs `redis-server` on PATH (`apt-get install redis-server`).

/// The state store every app of this test crate runs on.
pub const BACKEND: helpers::Backend = helpers::Backend::Redis;

#[path = "api/abort.rs"]
mod abort;
#[path = "api/auth.rs"]
mod auth;
#[path = "api/chunks.rs"]
mod chunks;
#[path = "api/complete.rs"]
mod complete;
#[path = "api/cors.rs"]
mod cors;
#[path = "api/create.rs"]
mod create;
#[path = "api/curl.rs"]
mod curl;
#[path = "api/download.rs"]
mod download;
#[path = "api/events.rs"]
mod events;
#[path = "api/files.rs"]
mod files;
#[path = "api/framing.rs"]
mod framing;
#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/hooks.rs"]
mod hooks;
#[path = "api/janitor.rs"]
mod janitor;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/owners.rs"]
mod owners;
#[path = "api/processing.rs"]
mod processing;
#[path = "api/redis_faults.rs"]
mod redis_faults;
#[path = "api/restart.rs"]
mod restart;
#[path = "api/security.rs"]
mod security;
#[path = "api/service.rs"]
mod service;
#[path = "api/smoke.rs"]
mod smoke;
#[path = "api/spec_hooks.rs"]
mod spec_hooks;
#[path = "api/spec_processing.rs"]
mod spec_processing;
#[path = "api/spec_sse.rs"]
mod spec_sse;
#[path = "api/sse.rs"]
mod sse;
#[path = "api/sse_client.rs"]
mod sse_client;
#[path = "api/sse_redis.rs"]
mod sse_redis;
#[path = "api/status.rs"]
mod status;
#[path = "api/tus.rs"]
mod tus;
#[path = "api/tus_auth.rs"]
mod tus_auth;
#[path = "api/tus_client.rs"]
mod tus_client;
#[path = "api/tus_concat.rs"]
mod tus_concat;
#[path = "api/tus_config.rs"]
mod tus_config;
#[path = "api/tus_ext.rs"]
mod tus_ext;
#[path = "api/tus_faults.rs"]
mod tus_faults;
#[path = "api/tus_metadata.rs"]
mod tus_metadata;
#[path = "api/tus_redis.rs"]
mod tus_redis;
#[path = "api/tus_wire.rs"]
mod tus_wire;
