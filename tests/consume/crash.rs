//! Crash safety: consumer processes SIGKILLed inside a handler, one at a
//! time and with a window of records in flight.

use std::time::Instant;

use kavari_tests::{Printed, spawn_consumer};

use super::*;

fn spawn(
    broker: &KafkaBroker,
    group: &str,
    i: usize,
    settings: &[String],
    printed: &Arc<Mutex<Printed>>,
) -> tokio::process::Child {
    let bin = env!("CARGO_BIN_EXE_kavari-test-consumer");
    spawn_consumer(
        bin,
        &broker.bootstrap_servers(),
        group,
        i,
        settings,
        printed,
    )
}

/// Waits until every one of the `n` jobs was handled by some process.
async fn all_handled(printed: &Arc<Mutex<Printed>>, n: u64) {
    eventually(
        Duration::from_secs(120),
        "every job handled by someone",
        || {
            let printed = printed.lock().unwrap();
            let handled: BTreeSet<u64> = printed.done.iter().map(|d| d.1).collect();
            handled.len() as u64 == n
        },
    )
    .await;
}

/// Publishes `n` jobs with keys `k{seq % keys}` at once, so each process
/// has a backlog to be caught in the middle of.
async fn publish_jobs(broker: &KafkaBroker, prefix: &str, n: u64, keys: u64) {
    publish_all(broker, prefix, &CrashJob::numbered(n, keys)).await;
}

#[tokio::test]
async fn a_consumer_killed_mid_handler_loses_nothing() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, _) = prefixed_topic::<CrashJob>(broker, 6).await;
    let group = unique_name("crash");
    let settings = [format!("KAVARI_TOPIC_PREFIX={prefix}")];
    let printed: Arc<Mutex<Printed>> = Arc::default();
    let mut children: Vec<_> = (0..3)
        .map(|i| spawn(broker, &group, i, &settings, &printed))
        .collect();

    // Every process owns partitions before the jobs go out: a process that
    // joined late could otherwise find the others done with all of them.
    eventually(
        WAIT,
        "the six partitions split over the three processes",
        || {
            let owns = printed.lock().unwrap().owns;
            owns.iter().all(|n| *n > 0) && owns.iter().sum::<usize>() == 6
        },
    )
    .await;
    // All at once (about 2 s of handling per process): published one by
    // one, the jobs came no faster than a replicated cluster acknowledges
    // them, and the handlers could finish each before the next arrived.
    const N: u64 = 300;
    publish_jobs(broker, &prefix, N, N).await;
    // Kill process 0 while it is inside a handler: it printed BEGIN of a
    // job whose DONE it has not printed.
    eventually(WAIT, "process 0 inside a handler", || {
        let printed = printed.lock().unwrap();
        let (begun, done) = printed.begun_and_done(0);
        begun > 5 && begun > done
    })
    .await;
    let owned_at_kill = printed.lock().unwrap().owns[0];
    children[0].start_kill().expect("SIGKILL");
    let _ = children[0].wait().await;

    all_handled(&printed, N).await;
    for child in &mut children[1..] {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let done: Vec<u64> = printed.lock().unwrap().done.iter().map(|d| d.1).collect();
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
    let handled: BTreeSet<u64> = done.iter().copied().collect();
    assert_eq!(handled, (0..N).collect::<BTreeSet<_>>(), "no job lost");
    assert!(
        duplicates <= bound,
        "{duplicates} jobs handled twice: more than the commit interval allows ({bound})"
    );
}

/// Key order with 64 records in flight, committing as records finish: a
/// process SIGKILLed mid-window loses nothing, its successor handles again
/// only records of the window (and those the commit in flight covered),
/// and no commit ever passed a record that was not done.
#[tokio::test]
async fn a_consumer_killed_with_a_window_in_flight_loses_nothing() {
    init_tracing();
    let broker = shared_broker().await.expect("broker");
    let (prefix, _) = prefixed_topic::<CrashJob>(broker, 1).await;
    let group = unique_name("crash-window");
    const IN_FLIGHT: u64 = 64;
    let settings = [
        format!("KAVARI_TOPIC_PREFIX={prefix}"),
        format!("KAVARI_PROCESSING_ORDER=key:{IN_FLIGHT}"),
        "KAVARI_AUTO_COMMIT_INTERVAL_MS=0".to_string(),
    ];
    const N: u64 = 3_000;
    publish_jobs(broker, &prefix, N, 300).await;
    let printed: Arc<Mutex<Printed>> = Arc::default();
    let mut first = spawn(broker, &group, 0, &settings, &printed);

    // The group's commits, read while the processes run: each with when it
    // was read.
    let commits: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let reader = {
        let cluster = kavari_wire::cluster::Cluster::new(broker.bootstrap_list(), "t".into(), WAIT);
        let (commits, group) = (Arc::clone(&commits), group.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(c) = kavari_group::admin::committed(&cluster, &group).await
                    && let Some(at) = c.values().next()
                {
                    commits.lock().unwrap().push((at.offset, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    eventually(WAIT, "the first process well into the jobs", || {
        printed.lock().unwrap().done.len() > 500
    })
    .await;
    let in_flight_at_kill = {
        let printed = printed.lock().unwrap();
        printed.begun.len() - printed.done.len()
    };
    kill(&mut first).await;
    let done_at_kill = printed.lock().unwrap().done.len();
    let mut second = spawn(broker, &group, 1, &settings, &printed);
    all_handled(&printed, N).await;
    drop(second.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), second.wait()).await;
    reader.abort();

    let printed = std::mem::take(&mut *printed.lock().unwrap());
    let handled: BTreeSet<u64> = printed.done.iter().map(|d| d.1).collect();
    assert_eq!(handled, (0..N).collect::<BTreeSet<_>>(), "no job lost");
    // The topic is the test's own, written in order: a job's offset is
    // its sequence number.
    assert!(printed.done.iter().all(|d| d.1 as i64 == d.2));
    let again: BTreeSet<u64> = {
        let by_first: BTreeSet<u64> = printed
            .done
            .iter()
            .filter(|d| d.0 == 0)
            .map(|d| d.1)
            .collect();
        printed
            .done
            .iter()
            .filter(|d| d.0 == 1 && by_first.contains(&d.1))
            .map(|d| d.1)
            .collect()
    };
    eprintln!(
        "crash with a window: {N} jobs, {} done before the kill, {in_flight_at_kill} in flight, {} handled again: {:?}",
        done_at_kill,
        again.len(),
        again.iter().take(8).collect::<Vec<_>>()
    );
    assert!(
        in_flight_at_kill > 1,
        "the process was killed with records in flight"
    );
    // The window, and the records of the commit under way at the kill
    // (at most a window more).
    assert!(
        again.len() as u64 <= 2 * IN_FLIGHT,
        "{} jobs handled twice: more than the window allows",
        again.len()
    );
    // A commit at offset c, read at t: every record below c was done by t
    // (its DONE line arrives within a second).
    let commits = commits.lock().unwrap().clone();
    assert!(commits.len() > 10, "commits were read while consuming");
    let done_at: HashMap<i64, Instant> = printed.done.iter().fold(HashMap::new(), |mut m, d| {
        let e = m.entry(d.2).or_insert(d.3);
        *e = (*e).min(d.3);
        m
    });
    for (at, read) in commits {
        for offset in 0..at {
            let done = done_at[&offset];
            assert!(
                done <= read + Duration::from_secs(1),
                "the commit at {at} passed offset {offset}, which was not done yet"
            );
        }
    }
}

async fn kill(child: &mut tokio::process::Child) {
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
}
