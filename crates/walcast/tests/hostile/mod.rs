//! Hostile and bad input against the real `walcast` binary.
//!
//! Every test runs `walcast source` and/or `walcast sink` as child processes against a real
//! PostgreSQL 15 cluster (one for this binary; each test has its own databases, slot,
//! publication and topic) and the kit's shared Kafka broker, captures their stderr and
//! asserts what an operator sees: the error text, the dead letters and their headers, and
//! that nothing committed is lost. Config cases that are pure parsing call the loaders.
//!
//! Children are killed when their handle drops (also when an assertion fails), so no process
//! outlives a test.

mod config_files;
mod dropped;
mod dsn;
mod payloads;
mod read_table;
mod rows;
