//! Per client address: the rate of dashboard logins (`server.login_per_minute`,
//! `server.login_burst`) and the throttle on failed authentication
//! (`server.auth_failures_per_second`, `server.auth_failures_burst`). An address that has used
//! up its failures is refused `429 rate_limited` before its token is even looked at, so guessing
//! runs at the refill rate at most, except for tokens that authenticated from that same address
//! within the last hour: agents already at work on a shared host are not locked out by a
//! guessing neighbour. Behind a reverse proxy every client has the proxy's address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::config::ServerConfig;
use crate::error::ApiError;

use super::limit::RateLimiter;

/// How long a token that authenticated from an address stays trusted there.
const TRUSTED_FOR: Duration = Duration::from_secs(3600);
/// How often at most a trusted token's time is written again.
const TRUST_REFRESH: Duration = Duration::from_secs(60);
/// Trusted (address, token) pairs beyond this many are pruned, so the map cannot grow without end.
const MAX_TRUSTED: usize = 100_000;

/// The client's address, when the connection's is known (it always is behind `serve`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The address of the connection a request came on.
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        Self(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

/// The login limit, the failure throttle, and the tokens trusted per address.
pub struct Throttle {
    logins: RateLimiter,
    login_limits: (f64, u32),
    failures: RateLimiter,
    failure_limits: (f64, u32),
    trusted: Mutex<HashMap<(IpAddr, [u8; 32]), Instant>>,
}

impl Throttle {
    /// A throttle with the limits of `[server]`.
    pub fn new(server: &ServerConfig) -> Self {
        Self {
            logins: RateLimiter::new(server.login_per_minute / 60.0, server.login_burst),
            login_limits: (server.login_per_minute, server.login_burst),
            failures: RateLimiter::new(server.auth_failures_per_second, server.auth_failures_burst),
            failure_limits: (server.auth_failures_per_second, server.auth_failures_burst),
            trusted: Mutex::new(HashMap::new()),
        }
    }

    fn trusted(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, [u8; 32]), Instant>> {
        self.trusted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a login attempt (a token or a one-time code) from `ip`; refused past the rate.
    pub fn login(&self, ip: ClientIp) -> Result<(), ApiError> {
        let Some(ip) = ip.0 else { return Ok(()) };
        self.logins
            .check(&ip.to_string(), Instant::now())
            .map_err(|retry_after| ApiError::RateLimited {
                detail: format!(
                    "too many logins from {ip}: at most {} in a burst, then {} a minute \
                     (server.login_burst, server.login_per_minute); try again in {retry_after} s",
                    self.login_limits.1, self.login_limits.0
                ),
                retry_after,
            })
    }

    /// Before the token with SHA-256 `hash` from `ip` is checked. A token that authenticated
    /// from this address lately passes, and so does any while the address has not failed
    /// lately (its failure bucket is full: a fleet of new agents starting at once is not
    /// held up). Once it has, a token takes one from the bucket before it is checked, given
    /// back if it turns out valid (see [`Throttle::checked`]), so however many guesses run at
    /// once, no more are checked than the bucket holds. Refused when it is empty; otherwise
    /// whether a failure was charged.
    pub fn before_check(&self, ip: ClientIp, hash: &[u8; 32]) -> Result<bool, ApiError> {
        let Some(ip) = ip.0 else { return Ok(false) };
        if self
            .trusted()
            .get(&(ip, *hash))
            .is_some_and(|at| at.elapsed() < TRUSTED_FOR)
        {
            return Ok(false);
        }
        let key = ip.to_string();
        let now = Instant::now();
        if self.failures.is_full(&key, now) {
            return Ok(false);
        }
        let Err(retry_after) = self.failures.check(&key, now) else {
            return Ok(true);
        };
        Err(ApiError::RateLimited {
            detail: format!(
                "too many failed authentications from {ip} (server.auth_failures_burst = {}, \
                 forgiven at server.auth_failures_per_second = {}); tokens are not checked from \
                 this address for now: try again in {retry_after} s",
                self.failure_limits.1, self.failure_limits.0
            ),
            retry_after,
        })
    }

    /// After [`Throttle::before_check`] (which `charged` a failure or not): whether the token
    /// with SHA-256 `hash` from `ip` was valid (`Some(true)`), not valid (`Some(false)`), or
    /// could not be checked (`None`). An invalid token costs the address one failure (the one
    /// it was charged, or one now); a valid one is trusted at this address for an hour.
    pub fn checked(&self, ip: ClientIp, hash: &[u8; 32], charged: bool, valid: Option<bool>) {
        let Some(ip) = ip.0 else { return };
        match (charged, valid) {
            (true, Some(true) | None) => self.failures.give_back(&ip.to_string()),
            (false, Some(false)) => {
                let _ = self.failures.check(&ip.to_string(), Instant::now());
            }
            _ => {}
        }
        if valid != Some(true) {
            return;
        }
        let now = Instant::now();
        let mut trusted = self.trusted();
        if trusted
            .get(&(ip, *hash))
            .is_some_and(|at| now.duration_since(*at) < TRUST_REFRESH)
        {
            return;
        }
        if trusted.len() >= MAX_TRUSTED {
            trusted.retain(|_, at| now.duration_since(*at) < TRUSTED_FOR);
            if trusted.len() >= MAX_TRUSTED {
                trusted.clear();
            }
        }
        trusted.insert((ip, *hash), now);
    }

    /// An authentication from `ip` that [`Throttle::before_check`] did not see (a one-time
    /// code) failed: one less it may fail before it is refused.
    pub fn failed(&self, ip: ClientIp) {
        if let Some(ip) = ip.0 {
            let _ = self.failures.check(&ip.to_string(), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_shut_out_new_tokens_but_not_trusted_ones() {
        let throttle = Throttle::new(&ServerConfig {
            auth_failures_burst: 2,
            auth_failures_per_second: 0.001,
            ..Default::default()
        });
        let here = ClientIp(Some([10, 0, 0, 1].into()));
        let there = ClientIp(Some([10, 0, 0, 2].into()));
        let charged = throttle.before_check(here, &[1; 32]).unwrap();
        throttle.checked(here, &[1; 32], charged, Some(true));
        for _ in 0..2 {
            let charged = throttle.before_check(here, &[2; 32]).unwrap();
            throttle.checked(here, &[2; 32], charged, Some(false));
        }
        let refused = throttle.before_check(here, &[2; 32]).unwrap_err().to_string();
        assert!(refused.contains("server.auth_failures_burst = 2"), "{refused}");
        assert!(throttle.before_check(here, &[1; 32]).is_ok(), "trusted here");
        assert!(throttle.before_check(there, &[2; 32]).is_ok(), "per address");
        assert!(throttle.before_check(ClientIp(None), &[2; 32]).is_ok());
    }
}
