//! Token-bucket rate limiting of Google calls (per user and per process).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// A token bucket.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Async token-bucket rate limiter (burst = one second's worth).
pub(crate) struct Limiter {
    rate: f64,
    state: Mutex<Bucket>,
}

impl Limiter {
    pub(crate) fn new(rate: f64) -> Limiter {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Limiter {
            rate,
            state: Mutex::new(Bucket {
                tokens: rate.max(1.0),
                last: Instant::now(),
            }),
        }
    }

    /// How long to wait before a token is free (zero: taken).
    pub(crate) fn try_take(&self) -> Duration {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let burst = self.rate.max(1.0);
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - b.tokens) / self.rate)
        }
    }

    /// Wait for a token.
    pub(crate) async fn acquire(&self) {
        loop {
            let wait = self.try_take();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_paces() {
        let l = Limiter::new(4.0);
        for _ in 0..4 {
            assert!(l.try_take().is_zero());
        }
        let wait = l.try_take();
        assert!(
            wait > Duration::from_millis(100) && wait <= Duration::from_millis(260),
            "{wait:?}"
        );
    }
}
