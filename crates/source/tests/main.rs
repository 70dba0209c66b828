//! Integration tests of walcast-source against a real Postgres 15 and a real Kafka broker
//! from walcast-testkit. One binary; every test has its own database, slot, publication and
//! topic.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod dead_letters;
mod delivery;
mod idle;
mod outage;
mod reconnect;
mod snapshots;
mod startup;
mod support;
mod topics;
