//! Alert: the daemon's own paging. `conditions` judges which alert kinds hold at an instant
//! (from the SLO windows, the `evidence` of recent failures, the open leaver episodes and the
//! sources' freshness); `engine` turns them into pending → firing → resolved alerts with hold
//! and keep-firing times, repeats and burn-tier suppression. Delivery is `crate::notify`'s.

pub mod conditions;
pub mod engine;
pub mod evidence;

pub use engine::{AlertEngine, AlertSettings, Condition, Notification, NotificationKind};
pub use evidence::Evidence;
