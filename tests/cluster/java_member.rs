//! A Java consumer (kafka-clients 4.4, `tests/peers/JavaMember.java`) and a
//! Kavari member in one classic group with the cooperative-sticky assignor:
//! the partitions split between them, each handles and commits its share,
//! and a member joining the group afterwards finds nothing left to handle.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::Kavari;
use kavari::assignor::CooperativeStickyAssignor;
use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Seen, Setup, owned, tickets};

const PARTITIONS: i32 = 6;
const RECORDS: u64 = 600;

/// A Kavari member of `group` preferring cooperative-sticky, as the Java
/// member does.
async fn kavari_member(setup: &Setup, group: &str, seen: &Seen) -> Kavari {
    setup
        .member(group, seen, |b| {
            b.assignors(vec![Arc::new(CooperativeStickyAssignor)])
        })
        .await
}

/// A Java consumer (`peers/JavaMember.java`) in a group, and what it
/// printed: the partitions it owns, the records it handled, and whether
/// it stopped cleanly.
pub(crate) struct JavaMember {
    pub(crate) child: tokio::process::Child,
    pub(crate) owns: Arc<Mutex<BTreeSet<i32>>>,
    pub(crate) handled: Arc<Mutex<BTreeSet<(i32, i64)>>>,
    pub(crate) stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl JavaMember {
    /// Starts a Java consumer of `group` on the setup's topic with the
    /// group `protocol`: `classic` or `consumer`, or `share` for a share
    /// consumer (KIP-932) of share group `group`.
    pub(crate) fn spawn(setup: &Setup, group: &str, protocol: &str) -> Self {
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/JavaMember.java");
        let mut java =
            tokio::process::Command::from(setup.cluster().java_peer(std::path::Path::new(source)));
        let child = java
            .args([
                setup.broker.bootstrap_servers().as_str(),
                group,
                setup.topic.as_str(),
                protocol,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("java");
        let owns: Arc<Mutex<BTreeSet<i32>>> = Arc::default();
        let handled: Arc<Mutex<BTreeSet<(i32, i64)>>> = Arc::default();
        let stopped: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let member = Self {
            child,
            owns: Arc::clone(&owns),
            handled: Arc::clone(&handled),
            stopped: Arc::clone(&stopped),
        };
        let mut child = member.child;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(list) = line.strip_prefix("OWNS ") {
                    *owns.lock().unwrap() = list
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.parse().expect("a partition"))
                        .collect();
                } else if let Some(at) = line.strip_prefix("HANDLED ") {
                    let mut at = at.split(' ').map(|n| n.parse::<i64>().expect("a number"));
                    let (p, o) = (at.next().expect("partition"), at.next().expect("offset"));
                    handled
                        .lock()
                        .unwrap()
                        .insert((i32::try_from(p).expect("partition"), o));
                } else if line == "STOPPED" {
                    stopped.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        Self { child, ..member }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_consumer_and_a_kavari_member_split_a_cooperative_group() {
    let setup = Setup::start("java", KafkaBroker::builder(), PARTITIONS).await;
    let group = kavari_testcontainers::unique_name("java-group");

    let java = JavaMember::spawn(&setup, &group, "classic");
    let (java_owns, java_handled, java_stopped, mut child) =
        (java.owns, java.handled, java.stopped, java.child);

    let handled = Seen::default();
    let member = kavari_member(&setup, &group, &handled).await;
    eventually(
        Duration::from_secs(90),
        "the partitions split between Java and Kavari",
        || {
            let java = java_owns.lock().unwrap().clone();
            let kavari = owned(&member);
            !java.is_empty()
                && !kavari.is_empty()
                && java.is_disjoint(&kavari)
                && java.len() + kavari.len() == PARTITIONS as usize
        },
    )
    .await;
    eprintln!(
        "java interop: Java owns {:?}, Kavari owns {:?}",
        java_owns.lock().unwrap(),
        owned(&member)
    );

    let publisher = setup.publisher().await;
    for r in publisher.publish_batch(&tickets(0..RECORDS)).await {
        r.expect("publish");
    }
    eventually(
        Duration::from_secs(60),
        "every record handled by one side",
        || {
            let java = java_handled.lock().unwrap();
            let kavari = handled.positions();
            java.union(&kavari).count() as u64 == RECORDS
        },
    )
    .await;
    let (java_count, kavari_count) = (
        java_handled.lock().unwrap().len(),
        handled.positions().len(),
    );
    eprintln!("java interop: Java handled {java_count}, Kavari {kavari_count} of {RECORDS}");
    assert!(
        java_count > 0 && kavari_count > 0,
        "both handled their share"
    );
    assert!(
        java_handled
            .lock()
            .unwrap()
            .is_disjoint(&handled.positions()),
        "no record handled by both while the group stood still"
    );

    // Both leave; what each committed is where a newcomer starts.
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(
        java_stopped.load(std::sync::atomic::Ordering::SeqCst),
        "the Java member stopped cleanly"
    );
    member.shutdown().await.expect("shutdown");
    let later = Seen::default();
    let newcomer = kavari_member(&setup, &group, &later).await;
    eventually(
        Duration::from_secs(60),
        "the newcomer owns every partition",
        || {
            let h = newcomer.health();
            h.partitions.len() == PARTITIONS as usize
                && h.partitions.iter().all(|p| p.position.is_some())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        later.all().is_empty(),
        "records handled again, so not committed: {:?}",
        later.all()
    );
    newcomer.shutdown().await.expect("shutdown");
    publisher.shutdown().await.expect("shutdown");
}
