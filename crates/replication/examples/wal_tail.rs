//! Stand-alone `wal tail`, the same code as `walcast wal tail` (the module
//! lives in the `walcast` crate and is compiled here too, so it cannot rot):
//! `cargo run -p walcast-replication --example wal_tail -- --dsn ... --slot ... --publication ...`

#[path = "../../walcast/src/wal_tail.rs"]
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
