//! The shapes of the responses Kavari reads, from the protocol's message
//! specs (`clients/src/main/resources/common/message/*Response.json`), for
//! the versions Kavari speaks. Names are in comments only: the walk needs
//! types and versions.

mod admin;
mod common;
mod connection;
mod group;
mod records;
mod share;
mod transactions;

pub use admin::*;
pub use connection::*;
pub use group::*;
pub use records::*;
pub use share::*;
pub use transactions::*;
