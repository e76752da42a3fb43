//! Produce requests on a connection: batches handed over by partitions'
//! senders wait in the connection's [`Gather`](crate::produce::Gather)
//! until one of them holds the writer, which writes all that may share a
//! request (see [`crate::produce`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Answer, Connection, Request, Shared, Writer};
use crate::WireError;
use crate::produce::{MAX_GATHERED_BYTES, PartitionProduce, SharedAnswer, Waiting, Written};

/// Takes a produce batch back from the writer's queue unless it was
/// written: its sender gave up (a timeout, or its task was dropped).
struct Unqueue<'a>(&'a Shared, u64);

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        self.0.gather().remove(self.1);
    }
}

/// The answer to come of the produce request that carried a batch: the
/// whole response, shared by every batch of the request.
#[must_use = "the answer says whether the batch was written"]
pub struct ProduceAnswer {
    answer: SharedAnswer,
    first: bool,
}

impl ProduceAnswer {
    /// Whether the batch was the first of its request: counting these
    /// counts requests.
    pub fn first_in_request(&self) -> bool {
        self.first
    }
}

impl std::fmt::Debug for ProduceAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProduceAnswer")
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl Future for ProduceAnswer {
    type Output = Result<Arc<ProduceResponse>, WireError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.answer).poll(cx)
    }
}

impl Connection {
    /// Hands one partition's record batch to the connection's produce
    /// writer and returns once it is written, with its request's answer to
    /// come, as [`send_pipelined`](Self::send_pipelined) does. Batches
    /// handed over while the writer is busy, or in the same turn of the
    /// runtime, share one request ([`crate::produce`]); each is written
    /// straight from `produce.records`. A partition's batches are written
    /// in the order they are handed over.
    pub async fn send_produce(
        self: &Arc<Self>,
        produce: PartitionProduce,
    ) -> Result<ProduceAnswer, WireError> {
        let version = self.version::<ProduceRequest>()?;
        if self.shared.broken.load(Ordering::Relaxed) {
            return Err(self.conn_err(self.shared.why_broken()));
        }
        let (tx, written) = oneshot::channel();
        let id = self.shared.gather().push(produce, tx);
        let _unwritten = Unqueue(&self.shared, id);
        // Batches handed over in this turn of the runtime join the request.
        tokio::task::yield_now().await;
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let write = async {
            let mut writer = self.writer.lock().await;
            while self.shared.gather().is_waiting(id) {
                let batches = self.shared.gather().take(MAX_GATHERED_BYTES);
                self.write_produce(&mut writer, batches, version, timeout, deadline)
                    .await;
            }
        };
        if tokio::time::timeout_at(deadline, write).await.is_err() {
            return Err(self.timed_out(ProduceRequest::NAME, timeout));
        }
        match written.await {
            Ok(Ok(Written { answer, first })) => Ok(ProduceAnswer { answer, first }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.conn_err(self.shared.why_broken())),
        }
    }

    /// Writes one produce request of `batches` and tells each of them.
    async fn write_produce(
        self: &Arc<Self>,
        writer: &mut Writer,
        batches: Vec<Waiting>,
        version: i16,
        timeout: Duration,
        deadline: Instant,
    ) {
        if batches.is_empty() {
            return;
        }
        let written = {
            let refs: Vec<&PartitionProduce> = batches.iter().map(|w| &w.produce).collect();
            self.write_locked(writer, |frame, correlation_id| {
                let header = self.header::<ProduceRequest>(version, correlation_id);
                crate::produce::frame(frame, &header, &refs, version)
            })
            .await
        };
        let answer = match written {
            Ok((rx, correlation_id)) => {
                let answer = Answer {
                    rx,
                    version,
                    correlation_id,
                };
                let conn = Arc::clone(self);
                let answer: SharedAnswer = async move {
                    conn.await_answer::<ProduceRequest>(answer, timeout, deadline)
                        .await
                        .map(Arc::new)
                }
                .boxed()
                .shared();
                Ok(answer)
            }
            Err(e) => Err(e),
        };
        for (n, w) in batches.into_iter().enumerate() {
            w.written(answer.clone().map(|answer| Written {
                answer,
                first: n == 0,
            }));
        }
    }
}
