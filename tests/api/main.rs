//! Integration tests: the real server, over HTTP, from outside.

mod helpers;
mod smoke;
