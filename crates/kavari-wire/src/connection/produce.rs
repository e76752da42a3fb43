//! Produce requests on a connection: a request of many partitions' batches
//! is written from the batches' own buffers, pipelined behind the
//! connection's other requests.

use std::sync::Arc;

use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tokio::time::Instant;

use super::{Answer, Connection, Request};
use crate::WireError;
use crate::produce::Produce;

impl Connection {
    /// Writes `request` and returns once it is written, with its answer to
    /// come, as [`send_pipelined`](Self::send_pipelined) does: a caller that
    /// writes its next request only after this returns keeps a partition's
    /// batches in order while several are in flight. The connection's
    /// timeout covers the write and the answer.
    pub async fn send_produce(
        self: &Arc<Self>,
        request: &Produce,
    ) -> Result<impl Future<Output = Result<ProduceResponse, WireError>> + Send + 'static, WireError>
    {
        let version = self.version::<ProduceRequest>()?;
        if self.is_broken() {
            return Err(self.conn_err(self.shared.why_broken()));
        }
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let write = async {
            let mut writer = self.writer.lock().await;
            self.write_locked(&mut writer, |frame, correlation_id| {
                let header = self.header::<ProduceRequest>(version, correlation_id);
                crate::produce::frame(frame, &header, request, version)
            })
            .await
        };
        let (rx, correlation_id) = match tokio::time::timeout_at(deadline, write).await {
            Ok(written) => written?,
            Err(_) => return Err(self.timed_out(ProduceRequest::NAME, timeout)),
        };
        let answer = Answer {
            rx,
            version,
            correlation_id,
        };
        let conn = Arc::clone(self);
        Ok(async move {
            conn.await_answer::<ProduceRequest>(answer, timeout, deadline)
                .await
        })
    }
}
