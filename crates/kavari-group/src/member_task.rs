//! What every member's task does alike, whichever protocol it speaks: tell
//! the runtime of a change, and end its run (left the group, or failed:
//! its partitions lost, its phase and the runtime told why).

use kavari_wire::TopicPartition;
use tokio::sync::mpsc;

use crate::error::GroupError;
use crate::events::{GroupEvent, MemberPhase};

/// The task of a classic or a consumer-protocol member.
pub(crate) trait MemberTask {
    /// The group's id, for logs.
    fn group(&self) -> &str;

    /// Where the runtime hears of the member's changes.
    fn events(&self) -> &mpsc::UnboundedSender<GroupEvent>;

    /// Gives up every partition without a commit, telling the runtime if
    /// there were any.
    fn lose(&mut self, why: &str);

    /// Makes `phase` the state the member's handle sees.
    fn show_phase(&mut self, phase: MemberPhase);

    /// Tells the runtime that `partitions` were lost (when there are any),
    /// and logs why.
    fn report_lost(&self, partitions: Vec<TopicPartition>, why: &str) {
        if !partitions.is_empty() {
            tracing::warn!(group = %self.group(), why, count = partitions.len(), "partitions lost");
            self.emit(GroupEvent::Lost { partitions });
        }
    }

    /// Tells the runtime of `event`.
    fn emit(&self, event: GroupEvent) {
        // No receiver: the runtime went away; the member still behaves.
        let _ = self.events().send(event);
    }

    /// Ends the run with how it went.
    fn end(&mut self, ran: Result<(), GroupError>) {
        match ran {
            Ok(()) => {
                tracing::info!(group = %self.group(), "left the group");
                self.show_phase(MemberPhase::Closed);
            }
            Err(e) => {
                tracing::error!(group = %self.group(), error = %e, "group member failed");
                self.lose("the member failed");
                self.show_phase(MemberPhase::Failed(e.to_string()));
                self.emit(GroupEvent::Failed(e));
            }
        }
    }
}
