//! The consumer runtime: joins the group through kavari-group, runs one task
//! per assigned partition, and commits only what was handled or
//! dead-lettered.

mod batches;
mod config;
mod consumer;
mod dispatch;
mod disposal;
mod runtime;
mod start;
mod state;
mod steering;
mod worker;
mod writer;

#[cfg(feature = "testing")]
pub(crate) use batches::deliver_batch;
pub(crate) use config::ConsumerConfig;
pub use config::{FailurePolicy, OffsetReset, ProcessingOrder};
pub(crate) use consumer::Consumer;
pub use consumer::StartError;
#[cfg(feature = "testing")]
pub(crate) use dispatch::deliver;
#[cfg(feature = "testing")]
pub(crate) use runtime::{Disposition, HandlerClock, POISON_LOG_EVERY, Runtime};
pub(crate) use state::ExactlyOnce;
pub(crate) use steering::Steer;
pub use steering::{ControlError, SeekTo};
#[cfg(feature = "testing")]
pub(crate) use steering::{Orders, Steering, Target};
pub(crate) use writer::{Writer, Writing};
