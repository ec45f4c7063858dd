//! API v1 (`/api/v1`, the contract in `docs/API.md`): uploads (and their
//! live `events`), files, owners' `usage`, and the operator's `admin`
//! endpoints.

pub mod admin;
pub mod events;
pub mod files;
pub mod uploads;
pub mod usage;
