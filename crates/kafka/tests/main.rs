//! Integration tests of the broker client against a real Kafka broker (the test kit's): topic
//! admin on the plaintext listener, TLS and SASL settings on the secure one. One binary; every
//! test has its own topic names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod security;
mod topics;
