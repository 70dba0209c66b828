//! Stand-alone `wal tail`: `cargo run -p walcast-replication --example wal_tail --
//! --dsn ... --slot ... --publication ...`. `wal_tail.rs` beside this file is
//! a copy of `crates/walcast/src/wal_tail.rs` (`walcast wal tail`); keep them equal.

mod wal_tail;

use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: wal_tail::WalTailArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    wal_tail::run(Cli::parse().args).await
}
