//! A Kavari consumer process for the crash-safety tests: handles
//! `CrashJob`s slowly and prints `BEGIN seq offset` / `DONE seq offset`
//! around each handler run, and `OWNS n` whenever the number of partitions
//! it owns changes.
//!
//! Usage: kavari-test-consumer BOOTSTRAP GROUP [KAVARI_VAR=value …] [JOB_MS=n]
//! (settings as `Kavari::from_vars` reads them, e.g.
//! `KAVARI_PROCESSING_ORDER=key:64`; `JOB_MS` sets the time of a job,
//! `CrashJob::TIME` by default).

use std::time::Duration;

use kavari::{HandlerError, Kavari, MessageContext, MessageHandler};
use kavari_tests::{CrashJob, CrashJobDone, say};

/// Takes `CrashJob::time_at` its unit per job.
struct Slow(Duration);

impl MessageHandler<CrashJob> for Slow {
    async fn handle(&self, job: CrashJob, ctx: &MessageContext) -> Result<(), HandlerError> {
        say(&format!("BEGIN {} {}", job.seq, ctx.offset));
        tokio::time::sleep(job.time_at(self.0)).await;
        // Under exactly-once handling (KAVARI_EXACTLY_ONCE), a result per
        // job, in the job's transaction.
        if let Some(tx) = ctx.transaction() {
            tx.publish(&CrashJobDone {
                key: job.key.clone(),
                seq: job.seq,
            })
            .await?;
        }
        say(&format!("DONE {} {}", job.seq, ctx.offset));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, group, settings) = match args.as_slice() {
        [_, b, g, settings @ ..] => (b.clone(), g.clone(), settings),
        _ => return Err("usage: kavari-test-consumer BOOTSTRAP GROUP [KAVARI_VAR=value …]".into()),
    };
    let mut vars = vec![("KAVARI_BROKERS".to_string(), bootstrap)];
    let mut unit = CrashJob::TIME;
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("{setting}: expected KAVARI_VAR=value"))?;
        if name == "JOB_MS" {
            unit = Duration::from_millis(value.parse()?);
            continue;
        }
        vars.push((name.to_string(), value.to_string()));
    }
    const COMMITS: &str = "KAVARI_AUTO_COMMIT_INTERVAL_MS";
    if !vars.iter().any(|(name, _)| name == COMMITS) {
        let every = CrashJob::COMMIT_INTERVAL.as_millis().to_string();
        vars.push((COMMITS.to_string(), every));
    }
    let manager = Kavari::from_vars(vars)?
        .group_id(group)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .rebalance_timeout(Duration::from_secs(10))
        .build()
        .await?;
    manager.subscribe::<CrashJob, _>(Slow(unit))?;
    manager.start().await?;
    say("STARTED");
    let watched = manager.clone();
    tokio::spawn(async move {
        let mut owned = usize::MAX;
        loop {
            // A share group's partitions count alike.
            let health = watched.health();
            let now = health.partitions.len() + health.share.map_or(0, |s| s.partitions.len());
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
