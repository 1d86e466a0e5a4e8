//! Request input: query strings, forms and path segments, checked once. Any text with a
//! control character (NUL, CR, LF, …) is refused with 400 before a handler runs, and
//! the `back` target of an action is accepted only as a clean same-origin path.

use std::collections::HashMap;

use axum::{
    extract::{Form, FromRequest, FromRequestParts, Path, Query, Request},
    http::request::Parts,
};

use crate::error::PageError;

/// Longest accepted parameter value.
const MAX_VALUE: usize = 4096;

/// Validated request parameters (the last value wins for repeated names).
#[derive(Debug, Clone, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Params, PageError> {
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            check_text(&k, "parameter name")?;
            check_text(&v, &k)?;
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    /// A non-empty value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A non-empty value parsed as a number, with a clear error naming `what`.
    pub fn number<T: std::str::FromStr>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>, PageError> {
        self.get(name)
            .map(|v| {
                v.trim().parse().map_err(|_| {
                    PageError::BadRequest(format!("{what} must be a number, got {v:?}"))
                })
            })
            .transpose()
    }

    /// The `back` target of an action, validated (see [`safe_back`]).
    pub fn back(&self) -> Result<Option<String>, PageError> {
        self.get("back").map(safe_back).transpose()
    }
}

/// Refuse control characters and oversized values.
pub fn check_text(v: &str, what: &str) -> Result<(), PageError> {
    if v.len() > MAX_VALUE {
        return Err(PageError::BadRequest(format!(
            "{what} is too long (at most {MAX_VALUE} bytes)"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(PageError::BadRequest(format!(
            "{what} contains a control character (such as NUL or a line break); remove it and try again"
        )));
    }
    Ok(())
}

/// Query-string parameters.
pub struct QueryParams(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| PageError::BadRequest(e.body_text()))?;
        Ok(QueryParams(Params::from_pairs(pairs)?))
    }
}

/// `application/x-www-form-urlencoded` body parameters.
pub struct FormParams(pub Params);

impl<S: Send + Sync> FromRequest<S> for FormParams {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|e| PageError::BadRequest(e.body_text()))?;
        Ok(FormParams(Params::from_pairs(pairs)?))
    }
}

impl FormParams {
    /// Parse the form of a request already split into parts and body.
    pub async fn from_request_parts_and_body<S: Send + Sync>(
        parts: Parts,
        body: axum::body::Body,
        state: &S,
    ) -> Result<FormParams, PageError> {
        FormParams::from_request(Request::from_parts(parts, body), state).await
    }
}

/// The `{id}` path segment, checked for control characters and parsed.
pub struct PathId<T>(pub T);

impl<S: Send + Sync, T: std::str::FromStr + Send> FromRequestParts<S> for PathId<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| PageError::BadRequest(e.body_text()))?;
        check_text(&raw, "the id")?;
        raw.parse()
            .map(PathId)
            .map_err(|_| PageError::BadRequest(format!("{raw:?} is not a valid id here")))
    }
}

/// Accept `back` only as a clean same-origin absolute path (with an optional query):
/// one leading `/` (not `//`, not `/\`), printable ASCII only (no control characters,
/// spaces or backslashes anywhere), no fragment, no `.`/`..` segments (also encoded).
/// Everything else could leave the origin in some browser or split a header.
pub fn safe_back(back: &str) -> Result<String, PageError> {
    let bad = |why: &str| Err(PageError::BadRequest(format!("unsafe back target: {why}")));
    if back.len() > 2048 {
        return bad("too long");
    }
    if !back.starts_with('/') {
        return bad("must be a path starting with /");
    }
    if back.starts_with("//") || back.starts_with("/\\") {
        return bad("must not name another host");
    }
    if let Some(c) = back.chars().find(|c| !c.is_ascii_graphic()) {
        return bad(&format!("character {c:?} is not allowed"));
    }
    if back.contains('\\') || back.contains('#') {
        return bad("backslashes and fragments are not allowed");
    }
    let path = back.split('?').next().unwrap_or("");
    let dotty = path.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    });
    if dotty {
        return bad("dot segments are not allowed");
    }
    if back.parse::<axum::http::uri::PathAndQuery>().is_err() {
        return bad("not a valid path");
    }
    Ok(back.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_accepts_clean_local_paths_only() {
        for ok in [
            "/",
            "/jobs",
            "/jobs?state=failed&user_id=3",
            "/jobs/01ABC",
            "/users/3?flash=a%20b",
        ] {
            assert_eq!(safe_back(ok).unwrap(), ok);
        }
        for bad in [
            "//evil.example",
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "\\/evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/jobs\r\nSet-Cookie: x=y",
            "/jobs\n",
            "/jobs\0",
            "/jobs\t",
            "/jobs with space",
            "/a/\\evil",
            "/jobs#frag",
            "/../evil",
            "/a/%2e%2e/b",
            "/a/./b",
            "/é",
        ] {
            assert!(safe_back(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(check_text("fine text, ünïcode too", "x").is_ok());
        for bad in ["a\0b", "a\rb", "a\nb", "\u{7f}", "\u{85}", "tab\t"] {
            assert!(check_text(bad, "x").is_err(), "{bad:?}");
        }
    }
}
