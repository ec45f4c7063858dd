//! What a request must get past before the core acts on it: who the caller
//! is and what it may do ([`auth`]), what one request may ask of the server
//! ([`limits`]: content types, disk space, chunk slots, idle bodies), and how
//! often a caller may ask ([`rate`]). Guards answer with [`crate::core::Error`]s;
//! they know nothing of HTTP.

pub mod auth;
pub mod limits;
pub mod rate;
