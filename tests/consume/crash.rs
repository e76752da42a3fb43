//! Crash safety: three consumer processes, one SIGKILLed inside a handler.

use super::*;

#[tokio::test]
async fn a_consumer_killed_mid_handler_loses_nothing() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    init_tracing();
    let broker = shared_broker().await.expect("broker");
    broker
        .create_topic(CrashJob::TOPIC, 6)
        .await
        .expect("topic");
    let group = unique_name("crash");
    let bin = env!("CARGO_BIN_EXE_kavari-test-consumer");

    let done: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let begun: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    // The partitions each process owns now.
    let owns: Arc<Mutex<[usize; 3]>> = Arc::default();
    let mut children = Vec::new();
    for i in 0..3 {
        let mut child = tokio::process::Command::new(bin)
            .args([broker.bootstrap_servers(), group.clone()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn consumer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (done, begun, owns) = (Arc::clone(&done), Arc::clone(&begun), Arc::clone(&owns));
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(s) = line.strip_prefix("DONE ") {
                    done.lock().unwrap().push((i, s.parse().unwrap()));
                } else if let Some(s) = line.strip_prefix("BEGIN ") {
                    begun.lock().unwrap().push((i, s.parse().unwrap()));
                } else if let Some(s) = line.strip_prefix("OWNS ") {
                    owns.lock().unwrap()[i] = s.parse().unwrap();
                }
            }
        });
        children.push(child);
    }

    // Every process owns partitions before the jobs go out: a process that
    // joined late could otherwise find the others done with all of them.
    eventually(
        WAIT,
        "the six partitions split over the three processes",
        || {
            let owns = owns.lock().unwrap();
            owns.iter().all(|n| *n > 0) && owns.iter().sum::<usize>() == 6
        },
    )
    .await;
    let publisher = Kavari::builder(broker.bootstrap_servers())
        .build()
        .await
        .expect("build");
    // All at once, so each process has a backlog (about 2 s of handling)
    // to be caught in the middle of: published one by one, the jobs came no
    // faster than a replicated cluster acknowledges them, and the handlers
    // could finish each before the next arrived.
    const N: u64 = 300;
    let jobs: Vec<CrashJob> = (0..N)
        .map(|seq| CrashJob {
            key: format!("k{seq}"),
            seq,
        })
        .collect();
    for r in publisher.publish_batch(&jobs).await {
        r.expect("publish");
    }
    // Kill process 0 while it is inside a handler: it printed BEGIN of a
    // job whose DONE it has not printed.
    eventually(WAIT, "process 0 inside a handler", || {
        let begun = begun.lock().unwrap();
        let done = done.lock().unwrap();
        begun.iter().filter(|(i, _)| *i == 0).count() > 5
            && begun.iter().filter(|(i, _)| *i == 0).count()
                > done.iter().filter(|(i, _)| *i == 0).count()
    })
    .await;
    let owned_at_kill = owns.lock().unwrap()[0];
    children[0].start_kill().expect("SIGKILL");
    let _ = children[0].wait().await;

    eventually(
        Duration::from_secs(120),
        "every job handled by someone",
        || {
            let handled: BTreeSet<u64> = done.lock().unwrap().iter().map(|(_, s)| *s).collect();
            handled.len() as u64 == N
        },
    )
    .await;
    for child in &mut children[1..] {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let done = done.lock().unwrap().clone();
    let duplicates = done.len() as u64 - N;
    // What a partition's next owner handles again is what was handled
    // since the last commit: one commit interval of work (100 ms of 20 ms
    // jobs here: 5) and the commit's round trip, per partition the killed
    // process owned; twice that, for a loaded machine.
    let per_partition =
        (CrashJob::COMMIT_INTERVAL.as_millis() / CrashJob::TIME.as_millis()) as u64 + 1;
    let bound = owned_at_kill as u64 * per_partition * 2;
    eprintln!(
        "crash test: {N} jobs, {duplicates} handled twice (done but not committed at the kill); \
         bound {bound} ({owned_at_kill} partition(s) of {per_partition} jobs, twice)"
    );
    let handled: BTreeSet<u64> = done.iter().map(|(_, s)| *s).collect();
    assert_eq!(handled, (0..N).collect::<BTreeSet<_>>(), "no job lost");
    assert!(
        duplicates <= bound,
        "{duplicates} jobs handled twice: more than the commit interval allows ({bound})"
    );
    publisher.shutdown().await.expect("shutdown");
}
