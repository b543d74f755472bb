//! Audit: the Parquet evidence store (`operations`, `leavers`) and the quarterly evidence
//! pack auditors receive.
//!
//! `schema` fixes the two tables (a contract: design.md "Parquet"), `writer` appends rows as
//! files that appear atomically under Hive-style `date=YYYY-MM-DD` partitions, and `export`
//! builds a quarter's pack (one file per table, sorted, plus a manifest with hashes and the
//! quarter's figures) and verifies one.

mod chunk;
pub mod coded;
pub mod export;
mod ids;
mod names;
pub mod schema;
pub mod writer;

pub use writer::{AuditError, AuditWriter};
