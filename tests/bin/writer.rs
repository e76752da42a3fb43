//! A process publishing in transactions for the fencing test: transaction
//! `seq` (0, 1, …) publishes `WRITTEN_PER_TRANSACTION` records of
//! `Written` and prints `COMMITTED seq` once it committed. When another
//! instance of its transactional id fences it, it prints `FENCED reason`
//! and exits; other failures print `FAILED seq reason` and it goes on. A
//! clean stop when stdin closes.
//!
//! Usage: kavari-test-writer BOOTSTRAP TRANSACTIONAL_ID WRITER [KAVARI_VAR=value …]

use std::time::Duration;

use kavari::{Kavari, TransactionError};
use kavari_tests::{Written, say};

/// Records per transaction: spread over the topic's partitions by key.
const WRITTEN_PER_TRANSACTION: u64 = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, id, writer, settings) = match args.as_slice() {
        [_, b, id, w, settings @ ..] => (b.clone(), id.clone(), w.clone(), settings),
        _ => {
            return Err(
                "usage: kavari-test-writer BOOTSTRAP TRANSACTIONAL_ID WRITER [KAVARI_VAR=value …]"
                    .into(),
            );
        }
    };
    let mut vars = vec![("KAVARI_BROKERS".to_string(), bootstrap)];
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("{setting}: expected KAVARI_VAR=value"))?;
        vars.push((name.to_string(), value.to_string()));
    }
    let manager = Kavari::from_vars(vars)?
        .transactional_id(id)
        .build()
        .await?;
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
        let _ = stop_tx.send(());
    });
    for seq in 0.. {
        if stop.try_recv().is_ok() {
            break;
        }
        let records: Vec<Written> = (0..WRITTEN_PER_TRANSACTION)
            .map(|i| Written {
                key: format!("{writer}-{seq}-{i}"),
                writer: writer.clone(),
                seq,
            })
            .collect();
        let outcome = manager
            .transaction(|tx| async move {
                for r in &records {
                    tx.publish(r).await?;
                }
                Ok(())
            })
            .await;
        match outcome {
            Ok(()) => say(&format!("COMMITTED {seq}")),
            Err(e @ TransactionError::Fenced { .. }) => {
                say(&format!("FENCED {e}"));
                break;
            }
            Err(e) => say(&format!("FAILED {seq} {e}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    manager.shutdown().await?;
    say("STOPPED");
    Ok(())
}
