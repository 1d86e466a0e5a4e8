//! Login throttling: failed logins (form logins and bearer tokens) are limited per
//! client address and globally, with token buckets (governor), in this process.
//!
//! Why in process and not a table: a failed login must cost the server nothing it
//! cannot afford, and a table would turn every attacker request into a database write;
//! tokens are at least 12 characters, so the limit bounds noise, not guessability. With
//! R processes serving the dashboard the limits apply R times.
//!
//! The rule (never locks the real admin out for longer than an attack lasts):
//! * Only failures count; a correct token never uses up quota.
//! * While a client's bucket is empty its attempts are refused (429, `Retry-After`)
//!   *without being checked*, so a refused guess reveals nothing.
//! * A client (IPv4 address, IPv6 /64) that floods empties only its own bucket: its
//!   failures beyond its own limit never reach the global bucket, so one attacker
//!   cannot lock anybody else out. Emptying the global bucket takes several clients
//!   each failing at their full rate (`global` / `per client` of them).
//! * Clients that logged in successfully before (this process remembers the last 1,024
//!   for 30 days) are exempt from the global bucket: a distributed flood does not lock
//!   out an admin who has logged in from their address before.
//! * Buckets refill continuously: there is no lockout state, and the wait never exceeds
//!   one refill period once an attack stops.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock,
};

use crate::{LoginThrottleConfig, client::mask};

/// How long a successful login exempts its client from the global limit.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// At most this many remembered clients.
const KNOWN_MAX: usize = 1024;
/// Prune per-client state past this many entries.
const PRUNE_AT: usize = 10_000;

/// The throttle key of a client: its IPv4 address, or its IPv6 /64 network (one
/// subscriber usually has a whole /64). `None` (no peer address known) is one client.
fn key(client: Option<IpAddr>) -> IpAddr {
    match client {
        Some(ip @ IpAddr::V4(_)) => ip,
        Some(ip @ IpAddr::V6(_)) => mask(ip, 64),
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[derive(Default)]
struct Blocks {
    clients: HashMap<IpAddr, Instant>,
    global: Option<Instant>,
    known: HashMap<IpAddr, Instant>,
}

/// Failed-login limits of one dashboard process.
pub struct LoginThrottle {
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    blocks: Mutex<Blocks>,
}

fn quota(burst: u32, period: Duration) -> Option<Quota> {
    Some(Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?))
}

impl LoginThrottle {
    /// `None` when a burst or period is zero.
    pub fn new(c: LoginThrottleConfig) -> Option<LoginThrottle> {
        Some(LoginThrottle {
            per_client: RateLimiter::keyed(quota(c.per_client_burst, c.per_client_period)?),
            global: RateLimiter::direct(quota(c.global_burst, c.global_period)?),
            blocks: Mutex::new(Blocks::default()),
        })
    }

    fn blocks(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May this client try a token now? `Err(wait)` while its bucket (or the global
    /// one, unless it is a known client) is empty: refuse without checking the token.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let k = key(client);
        let now = Instant::now();
        let b = self.blocks();
        if let Some(until) = b.clients.get(&k).filter(|u| **u > now) {
            return Err(*until - now);
        }
        if !is_known(&b, &k, now)
            && let Some(until) = b.global.filter(|u| *u > now)
        {
            return Err(until - now);
        }
        Ok(())
    }

    /// Count a failed login. `Err(wait)` when this failure emptied a bucket: the client
    /// (or everybody, for the global bucket) is refused for `wait`.
    pub fn failed(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let k = key(client);
        let now = Instant::now();
        if let Err(not_until) = self.per_client.check_key(&k) {
            let wait = not_until.wait_time_from(self.per_client.clock().now());
            let mut b = self.blocks();
            b.clients.insert(k, now + wait);
            if b.clients.len() > PRUNE_AT {
                b.clients.retain(|_, until| *until > now);
                self.per_client.retain_recent();
                self.per_client.shrink_to_fit();
            }
            return Err(wait);
        }
        if is_known(&self.blocks(), &k, now) {
            return Ok(());
        }
        if let Err(not_until) = self.global.check() {
            let wait = not_until.wait_time_from(self.global.clock().now());
            self.blocks().global = Some(now + wait);
            return Err(wait);
        }
        Ok(())
    }

    /// Remember a client that logged in successfully.
    pub fn succeeded(&self, client: Option<IpAddr>) {
        let k = key(client);
        let now = Instant::now();
        let mut b = self.blocks();
        if b.known.len() >= KNOWN_MAX && !b.known.contains_key(&k) {
            b.known.retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
            if b.known.len() >= KNOWN_MAX
                && let Some(oldest) = b.known.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
            {
                b.known.remove(&oldest);
            }
        }
        b.known.insert(k, now);
    }
}

fn is_known(b: &Blocks, k: &IpAddr, now: Instant) -> bool {
    b.known
        .get(k)
        .is_some_and(|at| now.duration_since(*at) < KNOWN_FOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn throttle(
        per_client_burst: u32,
        per_client_ms: u64,
        global_burst: u32,
        global_ms: u64,
    ) -> LoginThrottle {
        LoginThrottle::new(LoginThrottleConfig {
            per_client_burst,
            per_client_period: Duration::from_millis(per_client_ms),
            global_burst,
            global_period: Duration::from_millis(global_ms),
        })
        .unwrap()
    }

    #[test]
    fn a_flooding_client_locks_out_only_itself_and_only_for_a_while() {
        let t = throttle(3, 200, 100, 60_000);
        let attacker = ip("203.0.113.7");
        for _ in 0..3 {
            t.admit(attacker).unwrap();
            t.failed(attacker).unwrap();
        }
        let wait = t.failed(attacker).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(t.admit(attacker).is_err(), "refused without checking");
        // Thousands more refused attempts never touch anybody else's quota.
        for _ in 0..5000 {
            let _ = t.admit(attacker);
        }
        t.admit(ip("198.51.100.1")).unwrap();
        // The same /64 is the same client; another /64 is not.
        let v6 = ip("2001:db8:1:2::1");
        for _ in 0..3 {
            t.failed(v6).unwrap();
        }
        assert!(t.failed(ip("2001:db8:1:2::ffff")).is_err());
        t.admit(ip("2001:db8:1:3::1")).unwrap();
        // The attacker's bucket refills: no lockout lasts past the refill period.
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.admit(attacker).is_err() {
            assert!(Instant::now() < deadline, "the client stayed locked out");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_distributed_flood_empties_the_global_bucket_but_not_for_known_clients() {
        let t = throttle(2, 60_000, 4, 60_000);
        let admin = ip("192.0.2.10");
        t.succeeded(admin);
        // Two clients at their full per-client rate empty the global bucket of 4.
        let bots = [ip("203.0.113.1"), ip("203.0.113.2"), ip("203.0.113.3")];
        let mut refused = 0;
        for bot in bots {
            for _ in 0..2 {
                if t.failed(bot).is_err() {
                    refused += 1;
                }
            }
        }
        assert!(refused >= 1, "the global bucket ran dry");
        assert!(t.admit(ip("198.51.100.99")).is_err(), "new clients wait");
        t.admit(admin).unwrap();
        // A known client's failures still count against its own bucket.
        t.failed(admin).unwrap();
        t.failed(admin).unwrap();
        assert!(t.failed(admin).is_err());
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(
            LoginThrottle::new(LoginThrottleConfig {
                per_client_burst: 0,
                ..Default::default()
            })
            .is_none()
        );
    }
}
