//! `kavari tail TOPIC`: records as JSON lines, following new ones until
//! Ctrl-C or `--count`.

use std::time::Duration;

use kavari::codec::MSG_TYPE_HEADER;
use kavari_wire::cluster::Cluster;

use crate::output::out;
use crate::value::{header, line};
use crate::{Failure, records};

/// What `tail` reads and prints.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The topic.
    topic: String,
    /// Start at each partition's first record (default: its end, so only
    /// new records show).
    #[arg(long)]
    from_beginning: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Only records whose `msg_type` header is this.
    #[arg(long = "type")]
    msg_type: Option<String>,
    /// Which records of transactions show: only committed ones (the
    /// default), or also those of open and aborted transactions.
    #[arg(long, value_enum, default_value_t = Isolation::ReadCommitted)]
    isolation: Isolation,
}

/// Kafka's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
enum Isolation {
    /// Records of committed transactions, and records outside any.
    ReadCommitted,
    /// Every record written, aborted transactions' too.
    ReadUncommitted,
}

impl From<Isolation> for kavari_wire::fetch::Isolation {
    fn from(i: Isolation) -> Self {
        match i {
            Isolation::ReadCommitted => Self::ReadCommitted,
            Isolation::ReadUncommitted => Self::ReadUncommitted,
        }
    }
}

pub(crate) async fn run(cluster: &Cluster, args: Args) -> Result<(), Failure> {
    let isolation = args.isolation.into();
    let mut positions = records::start(
        cluster,
        &args.topic,
        args.partition,
        args.from_beginning,
        isolation,
    )
    .await?;
    let mut printed = 0u64;
    loop {
        let round = tokio::select! {
            round = records::poll(cluster, &args.topic, &mut positions, Duration::from_millis(500), isolation) => round?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for (partition, record) in round {
            if let Some(wanted) = &args.msg_type
                && header(&record, MSG_TYPE_HEADER) != Some(wanted.as_str())
            {
                continue;
            }
            out!("{}", line(&args.topic, partition, &record));
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
    }
}
