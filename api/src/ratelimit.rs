//! Per-address limits on the auth endpoints and per-user limits on chat (governor's GCRA).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::Error;
use crate::state::{AppState, Settings};

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

/// The peer address from the socket; without one (in-process tests) all share one bucket.
/// Forwarded-for headers are not trusted: any client could set them.
fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub async fn limit_auth(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, Error> {
    let ip = client_ip(&req);
    if let Err(nu) = state.limits.auth.check_key(&ip) {
        let wait = nu.wait_time_from(DefaultClock::default().now());
        state.metrics.rate_limited.inc();
        return Err(Error::TooManyRequests(wait.as_secs() + 1));
    }
    Ok(next.run(req).await)
}
