//! Integration tests of walcast-catalog against real Postgres 15 clusters from
//! walcast-testkit, over real HTTP on port-0 listeners. One binary; every test has its own
//! databases.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod app;
mod hardening;
mod query;
mod support;
mod tls;
mod write;
mod write_concurrency;
