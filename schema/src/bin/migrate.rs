//! `agentmeter-migrate`: creates the database and applies every pending
//! ClickHouse migration. Safe to run twice and from several processes at
//! once.

use agentmeter_schema::config::ClickHouseArgs;
use agentmeter_schema::migrations;
use clap::Parser;

/// Apply agentmeter's ClickHouse migrations.
#[derive(Parser, Debug)]
#[command(name = "agentmeter-migrate", version, about)]
struct Args {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Print the migrations and whether each is applied, and change nothing.
    #[arg(long)]
    status: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let ch = &args.clickhouse;
    if args.status {
        let applied = migrations::applied_versions(&ch.client()).await.unwrap_or_default();
        for m in migrations::all() {
            let state = if applied.contains(&m.version()) { "applied" } else { "pending" };
            println!("{:04} {:<20} {state}", m.version(), m.name());
        }
        return Ok(());
    }
    let report = migrations::migrate(&ch.server_client(), &ch.database).await?;
    for (version, name) in &report.applied {
        println!("applied {version:04} {name}");
    }
    println!(
        "database `{}` at {} is at version {} ({} newly applied, {} already applied)",
        ch.database,
        ch.url,
        migrations::latest_version(),
        report.applied.len(),
        report.already_applied
    );
    Ok(())
}
