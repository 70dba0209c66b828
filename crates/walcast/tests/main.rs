//! Integration tests of the `walcast` binary: one test binary, one module per topic, shared
//! helpers in `support/`. Every test runs the real binary against real PostgreSQL 15 clusters
//! and a real Apache Kafka broker from walcast-testkit, each with its own databases, slots and
//! topics.
//!
//! ```text
//! cargo test -p walcast --test main                    # all of them
//! cargo test -p walcast --test main hostile::          # one topic
//! cargo test -p walcast --test main crash_matrix:: -- --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod adoption;
mod compose;
mod crash_matrix;
mod dead_letters;
mod hostile;
mod replay;
mod schema;
mod security;
mod snapshot;
mod snapshot_crash;
mod soak;
mod source_crash;
mod support;
mod system;
mod wal_tail;
