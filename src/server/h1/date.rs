//! The `Date` a response gets when its upstream sent none (RFC 9110 §6.6.1: a proxy
//! that forwards a response without one adds it), formatted once a second per thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

struct Cached {
    second: u64,
    text: [u8; 29],
}

thread_local! {
    static NOW: RefCell<Cached> = const { RefCell::new(Cached { second: 0, text: [0; 29] }) };
}

/// Now as an IMF-fixdate (`Sun, 06 Dec 2026 02:25:49 GMT`).
pub fn now() -> [u8; 29] {
    let t = SystemTime::now();
    let second = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    NOW.with_borrow_mut(|c| {
        if c.second != second {
            let text = httpdate::fmt_http_date(t);
            if text.len() == 29 {
                c.text.copy_from_slice(text.as_bytes());
                c.second = second;
            }
        }
        c.text
    })
}
