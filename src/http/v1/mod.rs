//! API v1 (`/api/v1`, the contract in `docs/API.md`): uploads, files,
//! owners' `usage`, and the operator's `admin` endpoints.

pub mod admin;
pub mod files;
pub mod uploads;
pub mod usage;
