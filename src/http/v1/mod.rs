//! API v1 (`/api/v1`, the contract in `docs/API.md`): uploads and files.

pub mod files;
pub mod uploads;
