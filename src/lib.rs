//! scimwatch: watches SCIM provisioning (joiners, movers, leavers).
//!
//! The data flow, one module per step:
//! `source` (read lines) → `parse` (records) → `join` (operations, in event time) →
//! `judge` (outcome, cause, leaver episodes) → `report` (what replay prints) and `audit`
//! (Parquet evidence);
//! `engine` wires join and judge into the one synchronous core that `replay` (and the daemon)
//! drive.

pub mod alert;
pub mod alloc;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod durable;
pub mod engine;
pub mod http;
pub mod join;
pub mod judge;
pub mod model;
pub mod notify;
pub mod parse;
pub mod queue;
pub mod replay;
pub mod report;
pub mod slo;
pub mod source;
pub mod swar;
pub mod tail;
#[cfg(test)]
mod testing;
pub mod time;
