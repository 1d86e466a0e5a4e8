//! Fault injection: scripted HTTP errors and latency, with deterministic triggers.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, default_domain, html_error, oauth_error};

/// One fault-injection rule.
///
/// A rule *matches* a call when its scopes match; a matching rule *fires* when its
/// trigger says so (always, or with probability [`rate`](FaultRule::rate)). A rule
/// with [`times`](FaultRule::times) is removed after firing that many times.
///
/// Rules are checked in insertion order before any normal handling (before auth and
/// before the calendar lookup). Latency of every firing rule is added up; the first
/// firing rule that carries an [`error`](FaultRule::error) decides the response and
/// stops the scan (later rules are not consumed).
///
/// Serialized form (for `POST /_fake/faults`), all fields optional:
/// `{"calendar_id":"c_..","method":"events.insert","error":{"status":429,"reason":"rateLimitExceeded"},
///   "latency_ms":200,"times":3,"rate":0.2,"seed":7}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRule {
    /// Only calls whose `calendarId` path segment equals this (decoded) id.
    pub calendar_id: Option<String>,
    /// Only calls of this method (`"events.insert"`, ..., `"token"`). A trailing `*`
    /// is a prefix wildcard (`"events.*"`); `"*"` matches everything including `"token"`.
    /// Without a method scope a rule matches every Calendar API call but NOT the
    /// token endpoint.
    pub method: Option<String>,
    /// The error to answer with; `None` for a latency-only rule.
    pub error: Option<FaultError>,
    /// Added latency in milliseconds (slept before answering).
    pub latency_ms: Option<u64>,
    /// Fire on the next N matching calls only, then the rule is spent.
    pub times: Option<u32>,
    /// Probability (0.0..=1.0) that a matching call fires the rule.
    pub rate: Option<f64>,
    /// Seed of this rule's private RNG used with `rate` (default 0): same seed, same sequence.
    pub seed: Option<u64>,
}

/// The error part of a [`FaultRule`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultError {
    /// HTTP status, e.g. 429, 403, 500, 502, 503.
    pub status: u16,
    /// Google reason, e.g. `rateLimitExceeded`, `userRateLimitExceeded`, `quotaExceeded`,
    /// `backendError`. For the token endpoint it becomes the OAuth `error` field.
    pub reason: String,
    /// Message; defaults to Google's usual text for the reason.
    pub message: Option<String>,
    /// Error domain; defaults to `usageLimits` for quota reasons, else `global`.
    pub domain: Option<String>,
    /// Answer with Google's front-end HTML error page instead of JSON (the real client
    /// then returns `Error::Failure(response)` instead of `Error::BadRequest(json)`).
    pub non_json: bool,
}

impl FaultRule {
    /// A JSON error rule, e.g. `FaultRule::error(429, "rateLimitExceeded")`.
    pub fn error(status: u16, reason: impl Into<String>) -> Self {
        Self {
            error: Some(FaultError {
                status,
                reason: reason.into(),
                ..FaultError::default()
            }),
            ..Self::default()
        }
    }

    /// A non-JSON (HTML) error rule, e.g. `FaultRule::non_json(502)`.
    pub fn non_json(status: u16) -> Self {
        Self {
            error: Some(FaultError {
                status,
                reason: "badGateway".to_string(),
                non_json: true,
                ..FaultError::default()
            }),
            ..Self::default()
        }
    }

    /// A latency-only rule.
    pub fn latency(latency: Duration) -> Self {
        Self::default().with_latency(latency)
    }

    /// Adds latency to this rule (an error rule then answers late).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency_ms = Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Overrides the error message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        if let Some(error) = &mut self.error {
            error.message = Some(message.into());
        }
        self
    }

    /// Fires on the next `n` matching calls only.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Fires with probability `p` per matching call (deterministic, see [`seed`](Self::seed)).
    pub fn rate(mut self, p: f64) -> Self {
        self.rate = Some(p);
        self
    }

    /// Seeds this rule's RNG.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Restricts the rule to one calendar id.
    pub fn calendar(mut self, calendar_id: impl Into<String>) -> Self {
        self.calendar_id = Some(calendar_id.into());
        self
    }

    /// Restricts the rule to one method (`"events.insert"`, `"events.*"`, `"token"`, `"*"`).
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Checks the rule for nonsense values.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(error) = &self.error
            && !(400..=599).contains(&error.status)
        {
            return Err(format!(
                "error.status must be 400..=599, got {}",
                error.status
            ));
        }
        if let Some(rate) = self.rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(format!("rate must be within 0.0..=1.0, got {rate}"));
        }
        Ok(())
    }

    fn matches(&self, method: &str, calendar_id: Option<&str>) -> bool {
        let method_ok = match self.method.as_deref() {
            None => method != "token",
            Some("*") => true,
            Some(scope) => match scope.strip_suffix('*') {
                Some(prefix) => method.starts_with(prefix),
                None => scope == method,
            },
        };
        let calendar_ok = match self.calendar_id.as_deref() {
            None => true,
            Some(scope) => calendar_id == Some(scope),
        };
        method_ok && calendar_ok
    }
}

impl FaultError {
    fn message_text(&self) -> String {
        if let Some(message) = &self.message {
            return message.clone();
        }
        match self.reason.as_str() {
            "rateLimitExceeded" => "Rate Limit Exceeded".to_string(),
            "userRateLimitExceeded" => "User Rate Limit Exceeded".to_string(),
            "quotaExceeded" => "Calendar usage limits exceeded.".to_string(),
            "backendError" => "Backend Error".to_string(),
            "internalError" => "Internal Error".to_string(),
            _ => axum::http::StatusCode::from_u16(self.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error")
                .to_string(),
        }
    }

    /// The response for a Calendar API call.
    pub(crate) fn api_response(&self) -> Response {
        if self.non_json {
            return html_error(self.status);
        }
        let reason = if self.reason.is_empty() {
            "backendError"
        } else {
            self.reason.as_str()
        };
        let mut error = ApiError::new(self.status, reason, &self.message_text());
        error.domain = self
            .domain
            .clone()
            .unwrap_or_else(|| default_domain(reason).to_string());
        error.into_response()
    }

    /// The response for the OAuth token endpoint.
    pub(crate) fn token_response(&self) -> Response {
        if self.non_json {
            return html_error(self.status);
        }
        let reason = if self.reason.is_empty() {
            "internal_failure"
        } else {
            self.reason.as_str()
        };
        oauth_error(self.status, reason, &self.message_text())
    }
}

/// SplitMix64: tiny, stable across crate versions, good enough for fault dice.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone)]
struct ActiveFault {
    rule: FaultRule,
    rng: SplitMix64,
}

/// What the fault rules decided for one call.
#[derive(Debug, Default)]
pub(crate) struct FaultOutcome {
    pub latency: Duration,
    pub error: Option<FaultError>,
}

/// The active fault rules.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    active: Vec<ActiveFault>,
}

impl Faults {
    pub fn add(&mut self, rule: FaultRule) {
        if rule.times == Some(0) {
            return;
        }
        let rng = SplitMix64(rule.seed.unwrap_or(0));
        self.active.push(ActiveFault { rule, rng });
    }

    pub fn clear(&mut self) {
        self.active.clear();
    }

    /// The rules still active, with `times` showing the remaining count.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.active.iter().map(|a| a.rule.clone()).collect()
    }

    pub fn check(&mut self, method: &str, calendar_id: Option<&str>) -> FaultOutcome {
        let mut outcome = FaultOutcome::default();
        let mut i = 0;
        while i < self.active.len() {
            let fault = &mut self.active[i];
            if !fault.rule.matches(method, calendar_id) {
                i += 1;
                continue;
            }
            let fires = match fault.rule.rate {
                Some(p) => fault.rng.next_f64() < p,
                None => true,
            };
            if !fires {
                i += 1;
                continue;
            }
            outcome.latency += Duration::from_millis(fault.rule.latency_ms.unwrap_or(0));
            let error = fault.rule.error.clone();
            let spent = match &mut fault.rule.times {
                Some(n) => {
                    *n = n.saturating_sub(1);
                    *n == 0
                }
                None => false,
            };
            if spent {
                self.active.remove(i);
            } else {
                i += 1;
            }
            if error.is_some() {
                outcome.error = error;
                break;
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_exhaust_and_scopes() {
        let mut faults = Faults::default();
        faults.add(
            FaultRule::error(429, "rateLimitExceeded")
                .times(2)
                .calendar("a")
                .method("events.insert"),
        );
        assert!(faults.check("events.insert", Some("b")).error.is_none());
        assert!(faults.check("events.list", Some("a")).error.is_none());
        assert!(faults.check("events.insert", Some("a")).error.is_some());
        assert!(faults.check("events.insert", Some("a")).error.is_some());
        assert!(faults.check("events.insert", Some("a")).error.is_none());
        assert!(faults.rules().is_empty());
    }

    #[test]
    fn unscoped_rules_skip_token_endpoint() {
        let mut faults = Faults::default();
        faults.add(FaultRule::error(500, "backendError"));
        assert!(faults.check("token", None).error.is_none());
        assert!(faults.check("calendars.get", Some("x")).error.is_some());
        faults.clear();
        faults.add(FaultRule::error(500, "backendError").method("*"));
        assert!(faults.check("token", None).error.is_some());
        faults.clear();
        faults.add(FaultRule::error(500, "backendError").method("events.*"));
        assert!(faults.check("events.patch", Some("x")).error.is_some());
        assert!(faults.check("calendars.get", Some("x")).error.is_none());
    }

    #[test]
    fn rate_is_deterministic() {
        let run = || {
            let mut faults = Faults::default();
            faults.add(FaultRule::error(503, "backendError").rate(0.3).seed(42));
            (0..200)
                .map(|_| faults.check("events.get", Some("c")).error.is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((30..=90).contains(&hits), "hits = {hits}");
    }

    #[test]
    fn latency_accumulates_until_error() {
        let mut faults = Faults::default();
        faults.add(FaultRule::latency(Duration::from_millis(5)));
        faults.add(FaultRule::error(500, "backendError").with_latency(Duration::from_millis(7)));
        faults.add(FaultRule::latency(Duration::from_millis(100)).times(1));
        let outcome = faults.check("events.get", None);
        assert_eq!(outcome.latency, Duration::from_millis(12));
        assert!(outcome.error.is_some());
        // The third rule was not reached, so it is not spent.
        assert_eq!(faults.rules().len(), 3);
    }

    #[test]
    fn serde_round_trip() {
        let rule = FaultRule::error(403, "quotaExceeded")
            .times(1)
            .with_latency(Duration::from_millis(3));
        let json = serde_json::to_string(&rule).unwrap_or_default();
        let back: FaultRule = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(rule, back);
        let minimal: Result<FaultRule, _> =
            serde_json::from_str(r#"{"error":{"status":502,"non_json":true}}"#);
        assert!(minimal.is_ok_and(|r| r.error.is_some_and(|e| e.non_json)));
    }
}
