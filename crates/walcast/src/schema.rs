//! `walcast schema apply`: the write and read schemas under `sql/`, compiled into the binary so
//! an installed walcast needs no checkout.

use anyhow::Context;
use clap::{Args, ValueEnum};
use walcast_postgres::Dsn;

/// The write model and outbox (database `catalog_write`).
pub const WRITE_SQL: &str = include_str!("../../../sql/write.sql");
/// The read model and the sink's bookkeeping (`catalog_read` and every replica).
pub const READ_SQL: &str = include_str!("../../../sql/read.sql");

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    action: SchemaAction,
}

#[derive(Debug, clap::Subcommand)]
enum SchemaAction {
    /// Create what is missing; existing tables and rows are left alone.
    Apply {
        /// Which schema: `write` (products + outbox) or `read` (read model + sink bookkeeping).
        #[arg(value_enum)]
        schema: Schema,
        /// Connection string of the database to apply it to.
        /// Same dialect as the connector files: TLS by `sslmode` (`verify-full` with
        /// `sslrootcert=/path/ca.pem`), SCRAM passwords.
        #[arg(long, env = "WALCAST_DSN", hide_env_values = true)]
        dsn: String,
    },
    /// Print the SQL instead of applying it.
    Print {
        #[arg(value_enum)]
        schema: Schema,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Schema {
    Write,
    Read,
}

impl Schema {
    fn sql(self) -> &'static str {
        match self {
            Schema::Write => WRITE_SQL,
            Schema::Read => READ_SQL,
        }
    }
}

pub async fn run(args: SchemaArgs) -> anyhow::Result<()> {
    match args.action {
        SchemaAction::Print { schema } => {
            print!("{}", schema.sql());
            Ok(())
        }
        SchemaAction::Apply { schema, dsn } => {
            let dsn = Dsn::parse(&dsn).context("--dsn")?;
            apply(&dsn, schema.sql()).await?;
            tracing::info!(dsn = %dsn, schema = ?schema, "schema applied");
            Ok(())
        }
    }
}

/// Applies `sql` in one transaction, so a failure leaves the database as it was.
pub async fn apply(dsn: &Dsn, sql: &str) -> anyhow::Result<()> {
    let config = dsn.clone().with_application_name("walcast-schema");
    let mut client = walcast_postgres::connect_sql(&config)
        .await
        .with_context(|| format!("cannot connect to {dsn}"))?;
    let tx = client.transaction().await?;
    // Concurrent appliers (several services starting at once) would race on CREATE ... IF NOT
    // EXISTS; one advisory lock per database serialises them.
    tx.batch_execute("SELECT pg_advisory_xact_lock(7346021)")
        .await?;
    tx.batch_execute(sql)
        .await
        .with_context(|| format!("applying schema to {dsn}"))?;
    tx.commit().await?;
    Ok(())
}
