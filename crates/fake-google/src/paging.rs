//! Query-parameter helpers shared by the list methods: `maxResults`/`pageToken` paging over
//! a key-ordered collection, booleans and RFC 3339 instants.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::ApiError;

/// An opaque page token: `fp1` + the hex of the last key returned.
pub(crate) fn encode_page_token(last_key: &str) -> String {
    let hex: String = last_key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("fp1{hex}")
}

/// The last key of the previous page; anything else is Google's 400 "Invalid page token.".
pub(crate) fn decode_page_token(token: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("Invalid page token.");
    let hex = token.strip_prefix("fp1").ok_or_else(bad)?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// Parses `maxResults` (1..; clamped to `max`, like Google) .
pub(crate) fn parse_max_results(value: &str, max: usize) -> Result<usize, ApiError> {
    let n: i64 = value.parse().unwrap_or(0);
    if n < 1 {
        return Err(ApiError::invalid(&format!(
            "Invalid value '{value}'. Values must be within the range: [1, {max}]"
        )));
    }
    Ok(usize::try_from(n).unwrap_or(max).min(max))
}

pub(crate) fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::invalid(&format!(
            "Invalid value '{value}' for parameter {name}."
        ))),
    }
}

pub(crate) fn parse_instant(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|dt| dt.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid(&format!("Invalid value for {name}: {value}")))
}

/// `maxResults` + `pageToken` of one list call.
#[derive(Debug, Clone)]
pub(crate) struct PageQuery {
    pub max: usize,
    pub after: Option<String>,
}

impl PageQuery {
    /// Reads `maxResults` (default `default`, clamped to `max`) and `pageToken`.
    pub fn parse(query: &[(String, String)], default: usize, max: usize) -> Result<Self, ApiError> {
        let mut page = PageQuery {
            max: default,
            after: None,
        };
        for (key, value) in query {
            match key.as_str() {
                "maxResults" => page.max = parse_max_results(value, max)?,
                "pageToken" => page.after = Some(decode_page_token(value)?),
                _ => {}
            }
        }
        Ok(page)
    }

    /// One page of `items`, which must come in ascending key order: the items after the
    /// token's key, at most `max` of them, and the next page token if more remain.
    pub fn take(
        &self,
        items: impl Iterator<Item = (String, Value)>,
    ) -> (Vec<Value>, Option<String>) {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        for (key, item) in items {
            if self
                .after
                .as_deref()
                .is_some_and(|after| key.as_str() <= after)
            {
                continue;
            }
            if out.len() == self.max {
                return (out, last.as_deref().map(encode_page_token));
            }
            out.push(item);
            last = Some(key);
        }
        (out, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_tokens_round_trip() {
        let token = encode_page_token("c_x@group.calendar.google.com");
        assert_eq!(
            decode_page_token(&token).ok().as_deref(),
            Some("c_x@group.calendar.google.com")
        );
        assert!(decode_page_token("nonsense").is_err());
        assert!(decode_page_token("fp1zz").is_err());
    }

    #[test]
    fn pages_walk_everything_once() {
        let items = || (0..7).map(|i| (format!("k{i}"), json!(i)));
        let mut page = PageQuery {
            max: 3,
            after: None,
        };
        let mut seen = Vec::new();
        loop {
            let (got, next) = page.take(items());
            seen.extend(got);
            match next {
                Some(token) => page.after = decode_page_token(&token).ok(),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).map(|i| json!(i)).collect::<Vec<_>>());
        let exact = PageQuery {
            max: 7,
            after: None,
        };
        assert!(exact.take(items()).1.is_none());
        assert!(parse_max_results("0", 250).is_err());
        assert_eq!(parse_max_results("9999", 250).ok(), Some(250));
    }
}
