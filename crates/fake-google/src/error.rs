//! Google-shaped error responses for the Calendar API and the OAuth token endpoint.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Content type Google uses for JSON bodies.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// Builds a JSON response with Google's content type.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    // Serialising a `Value` cannot fail (all map keys are strings).
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    response
}

/// An error of the Calendar API, rendered exactly like Google renders it:
/// `{"error":{"code":..,"message":..,"errors":[{"domain":..,"reason":..,"message":..}]}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub domain: String,
    pub reason: String,
    pub message: String,
    /// 401 responses carry extra fields (`location`, `status`) and a `WWW-Authenticate` header.
    pub auth: bool,
}

impl ApiError {
    pub fn new(status: u16, reason: &str, message: &str) -> Self {
        Self {
            status,
            domain: default_domain(reason).to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            auth: false,
        }
    }

    /// Overrides the error domain (Google uses `calendar` for some Calendar-specific reasons).
    pub fn in_domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_string();
        self
    }

    pub fn not_found() -> Self {
        Self::new(404, "notFound", "Not Found")
    }

    pub fn deleted() -> Self {
        Self::new(410, "deleted", "Resource has been deleted")
    }

    pub fn duplicate() -> Self {
        Self::new(409, "duplicate", "The requested identifier already exists.")
    }

    pub fn invalid(message: &str) -> Self {
        Self::new(400, "invalid", message)
    }

    pub fn required(message: &str) -> Self {
        Self::new(400, "required", message)
    }

    pub fn parse_error() -> Self {
        Self::new(400, "parseError", "Parse Error")
    }

    pub fn time_range_empty() -> Self {
        Self::new(400, "timeRangeEmpty", "The specified time range is empty.")
    }

    pub fn unsupported(what: &str) -> Self {
        Self::new(
            400,
            "unsupportedByFake",
            &format!("calsync-fake-google does not implement {what}"),
        )
    }

    /// A valid token whose scopes do not cover the method.
    pub fn insufficient_permissions() -> Self {
        Self::new(
            403,
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
        )
    }

    /// A present but unknown/expired/revoked access token.
    pub fn auth_error() -> Self {
        Self {
            auth: true,
            ..Self::new(401, "authError", "Invalid Credentials")
        }
    }

    /// No `Authorization` header at all.
    pub fn login_required() -> Self {
        Self {
            auth: true,
            ..Self::new(401, "required", "Login Required.")
        }
    }

    /// The JSON body Google would send.
    pub fn body(&self) -> Value {
        let mut item = json!({
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        });
        let mut error = json!({
            "code": self.status,
            "message": self.message,
        });
        if self.auth {
            item["location"] = json!("Authorization");
            item["locationType"] = json!("header");
            error["status"] = json!("UNAUTHENTICATED");
        }
        error["errors"] = json!([item]);
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(status, &self.body());
        if self.auth {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
                ),
            );
        }
        response
    }
}

/// Google puts quota/rate errors in the `usageLimits` domain and everything else in `global`.
pub(crate) fn default_domain(reason: &str) -> &'static str {
    match reason {
        "rateLimitExceeded"
        | "userRateLimitExceeded"
        | "quotaExceeded"
        | "dailyLimitExceeded"
        | "dailyLimitExceededUnreg" => "usageLimits",
        _ => "global",
    }
}

/// An OAuth token-endpoint error: `{"error":"invalid_grant","error_description":".."}`.
pub(crate) fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// The HTML page Google's front end serves for gateway errors (not JSON on purpose).
pub(crate) fn html_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let code = status.as_u16();
    let body = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  \
         <title>Error {code} (Server Error)!!1</title>\n  \
         <p><b>{code}.</b> <ins>That\u{2019}s an error.</ins>\n  \
         <p>The server encountered a temporary error and could not complete your request.\
         <p>Please try again in 30 seconds.  <ins>That\u{2019}s all we know.</ins>\n"
    );
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}
