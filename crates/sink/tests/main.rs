//! Integration tests of the sink against four real Postgres clusters and a real Kafka broker.
//! One binary (one shared broker); every test has its own topic and databases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod applied;
mod bounds;
mod crash;
mod delivery;
mod held;
mod outage;
mod partitions;
mod peer;
mod poison;
mod prune;
mod rebuild;
mod retention;
mod schema;
mod versions;
