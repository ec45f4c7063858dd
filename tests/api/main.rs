//! Integration tests: the real server, over HTTP, from outside.

mod abort;
mod chunks;
mod complete;
mod create;
mod curl;
mod download;
mod helpers;
mod janitor;
mod restart;
mod service;
mod smoke;
mod status;
