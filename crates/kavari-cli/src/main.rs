//! `kavari`: look at Kafka topics the way Kavari services write them.
//!
//! Connection settings as the library's: `--brokers` or `KAVARI_BROKERS`,
//! and the `KAVARI_SECURITY_PROTOCOL`, `KAVARI_SASL_*` and `KAVARI_SSL_*`
//! variables. Exit status: 0 done, 1 the cluster refused or could not be
//! reached (the reason on stderr), 2 a usage error.

mod connect;
mod dlq;
mod group;
mod output;
mod produce;
mod records;
mod replay_progress;
mod tail;
mod topic;
mod value;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Look at Kafka topics the way Kavari services write them.
#[derive(Debug, Parser)]
#[command(
    name = "kavari",
    version,
    after_help = "Examples:\n  \
        kavari --brokers localhost:9092 tail orders --from-beginning --count 10\n  \
        kavari dlq list orders.dlq\n  \
        kavari dlq replay orders.dlq --where msg_type=OrderPlaced --dry-run\n  \
        kavari topic create orders --partitions 6\n  \
        kavari group describe billing --json\n  \
        kavari group reset-offsets billing --topic orders --to-datetime 2026-12-01T08:00:00Z\n  \
        kavari produce orders --type OrderPlaced --key o-1 --value '{\"order_id\":\"o-1\"}'\n\n\
        Connection: --brokers or KAVARI_BROKERS; TLS and SASL from KAVARI_SECURITY_PROTOCOL,\n\
        KAVARI_SASL_* and KAVARI_SSL_* as for the library (Kavari::from_env)."
)]
struct Cli {
    /// Bootstrap servers, `host:port[,host:port]` (default: KAVARI_BROKERS).
    #[arg(long, global = true)]
    brokers: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a topic's records as JSON lines, following new ones.
    Tail(tail::Args),
    /// Dead-letter topics.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Topics.
    #[command(subcommand)]
    Topic(topic::Command),
    /// Consumer groups.
    #[command(subcommand)]
    Group(group::Command),
    /// Publish JSON values as a Kavari service of a message type would.
    Produce(produce::Args),
}

/// A failure the command reports and exits 1 for.
#[derive(Debug)]
pub(crate) struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Where the cluster is, and how to reach it, is the command line's (or
    // the environment's): missing or wrong, it is a usage error.
    let settings = match connect::settings(cli.brokers) {
        Ok(settings) => settings,
        Err(Failure(why)) => {
            eprintln!("kavari: {why}\n\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kavari: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&settings, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(why)) => {
            eprintln!("kavari: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &connect::Settings, command: Command) -> Result<(), Failure> {
    let cluster = settings.cluster();
    match command {
        Command::Tail(args) => tail::run(&cluster, args).await,
        Command::Dlq(command) => dlq::run(settings, &cluster, command).await,
        Command::Topic(command) => topic::run(&cluster, command).await,
        Command::Group(command) => group::run(&cluster, command).await,
        Command::Produce(args) => produce::run(settings, args).await,
    }
}
