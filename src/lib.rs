//! tranche: a self-hosted server for chunked, resumable uploads of big files.
//!
//! Start at [`startup`] (how the server is put together) and [`uploads`] (what
//! each API call does); `../shared/API.md` is the HTTP contract.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod download;
pub mod error;
pub mod forwarded;
pub mod hashing;
pub mod janitor;
pub mod limits;
pub mod metrics;
pub mod ratelimit;
pub mod startup;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod upload;
pub mod uploads;
