//! A Kavari consumer process for the crash-safety test: handles `CrashJob`s
//! slowly and prints `BEGIN seq` / `DONE seq` around each handler run, and
//! `OWNS n` whenever the number of partitions it owns changes.
//!
//! Usage: kavari-test-consumer BOOTSTRAP GROUP

use std::io::Write;
use std::time::Duration;

use kavari::{HandlerError, Kavari, MessageContext, MessageHandler};
use kavari_tests::CrashJob;

struct Slow;

impl MessageHandler<CrashJob> for Slow {
    async fn handle(&self, job: CrashJob, _: &MessageContext) -> Result<(), HandlerError> {
        say(&format!("BEGIN {}", job.seq));
        tokio::time::sleep(CrashJob::TIME).await;
        say(&format!("DONE {}", job.seq));
        Ok(())
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, group) = match args.as_slice() {
        [_, b, g] => (b.clone(), g.clone()),
        _ => return Err("usage: kavari-test-consumer BOOTSTRAP GROUP".into()),
    };
    let manager = Kavari::builder(bootstrap)
        .group_id(group)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(10))
        .commit_interval(CrashJob::COMMIT_INTERVAL)
        .build()
        .await?;
    manager.subscribe::<CrashJob, _>(Slow)?;
    manager.start().await?;
    say("STARTED");
    let watched = manager.clone();
    tokio::spawn(async move {
        let mut owned = usize::MAX;
        loop {
            let now = watched.health().partitions.len();
            if now != owned {
                owned = now;
                say(&format!("OWNS {owned}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Runs until killed, or until stdin closes for a clean stop.
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
    })
    .await?;
    manager.shutdown().await?;
    say("STOPPED");
    Ok(())
}
