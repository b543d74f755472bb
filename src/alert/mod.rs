//! Alert: the daemon's own paging lifecycle. `engine` turns the conditions that hold at each
//! instant into pending → firing → resolved alerts with hold and keep-firing times, repeats and
//! burn-tier suppression; delivery (email, webhooks) consumes its notifications.

pub mod engine;

pub use engine::{AlertEngine, AlertSettings, Condition, Notification, NotificationKind};
