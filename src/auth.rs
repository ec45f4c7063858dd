//! Who may do what. Authentication is not implemented yet (see the issue
//! "Access control"); every request is let through as [`Access::Open`]. This is
//! the one place it will plug in: handlers take an [`Access`] and ask it before
//! acting, so adding API keys and upload tokens changes this module only.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, FromRequest, HttpRequest};
use uuid::Uuid;

use crate::error::ApiError;

/// The caller's rights, extracted from the request.
#[derive(Debug, Clone)]
pub enum Access {
    /// Authentication is off: everything is allowed.
    Open,
}

impl Access {
    /// May the caller start an upload of `size` bytes of `content_type`?
    pub fn may_create(&self, _size: u64, _content_type: &str) -> Result<(), ApiError> {
        match self {
            Access::Open => Ok(()),
        }
    }

    /// May the caller send chunks to, read, complete, abort or download `id`?
    pub fn may_use(&self, _id: Uuid) -> Result<(), ApiError> {
        match self {
            Access::Open => Ok(()),
        }
    }
}

impl FromRequest for Access {
    type Error = ApiError;
    type Future = Ready<Result<Access, ApiError>>;

    fn from_request(_req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Ok(Access::Open))
    }
}
