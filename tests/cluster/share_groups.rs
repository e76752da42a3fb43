//! Share groups (KIP-932, `share_group`): members receive records of the
//! same partitions, each record acquired and acknowledged one by one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavari::{HandlerError, Kavari, MessageContext, MessageHandler, ProcessingOrder};
use kavari_testcontainers::KafkaBroker;
use kavari_tests::eventually;

use crate::{Setup, Ticket, tickets};

/// Every ticket a member handled, with its delivery count.
#[derive(Clone, Default)]
struct Jobs(Arc<Mutex<Vec<(u64, u16)>>>);

impl MessageHandler<Ticket> for Jobs {
    async fn handle(&self, t: Ticket, ctx: &MessageContext) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push((t.seq, ctx.delivery_count));
        Ok(())
    }
}

/// A started member of share group `group`, handling `in_flight` records
/// side by side.
async fn share_member(setup: &Setup, group: &str, in_flight: usize, jobs: Jobs) -> Kavari {
    let m = Kavari::builder(setup.broker.bootstrap_servers())
        .topic_prefix(&setup.prefix)
        .share_group(group)
        .processing_order(ProcessingOrder::Unordered {
            max_in_flight: in_flight,
        })
        .build()
        .await
        .expect("build");
    m.subscribe::<Ticket, _>(jobs).expect("subscribe");
    m.start().await.expect("start");
    m
}

/// Six members of one share group on a two-partition topic: all six get
/// work, and each of 5,000 jobs is handled and accepted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_share_members_on_two_partitions_all_work_and_handle_each_job_once() {
    const N: u64 = 5_000;
    let setup = Setup::start("share", KafkaBroker::builder(), 2).await;
    let group = kavari_testcontainers::unique_name("share");
    let jobs: Vec<Jobs> = (0..6).map(|_| Jobs::default()).collect();
    let mut members = Vec::new();
    for j in &jobs {
        members.push(share_member(&setup, &group, 4, j.clone()).await);
    }
    eventually(
        Duration::from_secs(60),
        "every member has partitions",
        || {
            members
                .iter()
                .all(|m| m.health().share.is_some_and(|s| !s.partitions.is_empty()))
        },
    )
    .await;
    let publisher = setup.publisher().await;
    for chunk in tickets(0..N).chunks(1_000) {
        for r in publisher.publish_batch(chunk).await {
            r.expect("publish");
        }
    }
    let handled = || -> Vec<(u64, u16)> {
        jobs.iter()
            .flat_map(|j| j.0.lock().unwrap().clone())
            .collect()
    };
    eventually(Duration::from_secs(120), "every job handled", || {
        handled().iter().map(|h| h.0).collect::<BTreeSet<_>>().len() as u64 == N
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_member: Vec<usize> = jobs.iter().map(|j| j.0.lock().unwrap().len()).collect();
    eprintln!("share group: jobs per member {per_member:?}");
    assert!(
        per_member.iter().all(|n| *n > 0),
        "all six worked: {per_member:?}"
    );
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for (seq, _) in handled() {
        *times.entry(seq).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs handled twice: {twice:?}");
    let accepted: u64 = members
        .iter()
        .map(|m| m.health().share.map_or(0, |s| s.accepted))
        .sum();
    assert_eq!(accepted, N, "each accepted once");
    for m in members {
        m.shutdown().await.expect("shutdown");
    }
    publisher.shutdown().await.expect("shutdown");
}
