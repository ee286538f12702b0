//! Per-address limits on the auth endpoints and per-user limits on chat (governor's GCRA).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::settings::Settings;

pub struct Limiters {
    pub auth: DefaultKeyedRateLimiter<IpAddr>,
    pub chat: DefaultKeyedRateLimiter<String>,
}

fn quota(burst: u32, refill: std::time::Duration) -> Quota {
    Quota::with_period(refill)
        .expect("refill period is non-zero")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is at least 1"))
}

impl Limiters {
    pub fn new(s: &Settings) -> Self {
        Self {
            auth: RateLimiter::keyed(quota(s.auth_burst, s.auth_refill)),
            chat: RateLimiter::keyed(quota(s.chat_burst, s.chat_refill)),
        }
    }

    /// Whole seconds to wait, or None when the user may go ahead.
    pub fn chat_wait(&self, user: &str) -> Option<u64> {
        self.chat
            .check_key(&user.to_owned())
            .err()
            .map(|nu| nu.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
    }
}
