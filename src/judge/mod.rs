//! Judge: what became of each joined operation (outcome, cause, disagreement), and the leaver
//! episodes built from them — all in event time, with no clock of its own.

pub mod leavers;
pub mod operation;
pub mod policy;

pub use leavers::{ClockStart, Closed, Episode, EpisodeState, Episodes, PostDisableActivity};
pub use operation::{judge, Attempt, Operation};
pub use policy::Policy;
