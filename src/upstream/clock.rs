//! A coarse process clock in milliseconds, cheap to read and storable in an atomic
//! (ejection deadlines).

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call in this process, plus one (so 0 can mean "never").
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}
