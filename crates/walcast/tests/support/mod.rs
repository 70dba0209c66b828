//! Helpers shared by the test modules: the binary under test, the whole pipeline on its own
//! clusters (`stack`), one shared cluster and broker with per-test databases and topics
//! (`pipeline`), and the source crate's own test support for the source's crash test
//! (`source`).

pub mod pipeline;
pub mod stack;

#[path = "../../../source/tests/support/mod.rs"]
pub mod source;

use std::path::Path;

use walcast_testkit::Service;

/// The `walcast` binary this package built.
pub const WALCAST: &str = env!("CARGO_BIN_EXE_walcast");

/// `walcast ARGS` as a child process named `name` (log files in `logs`), not started yet.
pub fn walcast(name: &str, args: &[&str], logs: &Path) -> Service {
    Service::new(name, WALCAST, logs).args(args)
}

/// A free loopback port (never one handed out before in this binary).
pub fn free_port() -> u16 {
    walcast_testkit::free_port().unwrap_or_else(|e| panic!("{e}"))
}
