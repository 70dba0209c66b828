//! Integration tests of walcast-replication against real Postgres 15
//! clusters from walcast-testkit. One binary; every test has its own
//! database, slot and publication.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod changes;
mod errors;
mod large_txn;
mod progress;
mod session;
mod support;
mod tail;
mod tls;
