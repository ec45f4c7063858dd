//! tranche: a self-hosted server for chunked, resumable uploads of big files.
//!
//! Start at [`startup`] (how the server is put together), [`core`] (what
//! happens in an upload's life) and [`http`] (API v1 over HTTP);
//! `docs/API.md` is the HTTP contract.

pub mod blobs;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod core;
pub mod events;
pub mod guards;
pub mod hashing;
pub mod hooks;
pub mod http;
pub mod janitor;
pub mod metrics;
pub mod openapi;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod upload;
pub mod wire;
