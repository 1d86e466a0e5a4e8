//! Shared helpers for the integration tests: a real `google-calendar3` hub pointed at the
//! fake, raw HTTP for the token endpoint and control API, and error decoding.

#![allow(dead_code)]

use calsync_fake_google::{FakeGoogle, test_keys};
use chrono::{TimeZone, Utc};
use google_calendar3::api::{Event, EventDateTime, EventExtendedProperties};
use google_calendar3::hyper::body::Bytes;
use google_calendar3::{CalendarHub, Error};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The hub type used by calsync.
pub type Hub = CalendarHub<HttpsConnector<HttpConnector>>;

/// A real hub authenticated with `token`, aimed at the fake.
pub fn hub(fake: &FakeGoogle, token: &str) -> Hub {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let mut hub = CalendarHub::new(client, token.to_string());
    hub.base_url(fake.base_url());
    hub.root_url(fake.root_url());
    hub
}

/// A fake with one calendar and a valid access token `"access-token"`.
pub async fn setup() -> (FakeGoogle, Hub, String) {
    let fake = FakeGoogle::start().await.expect("start fake");
    fake.add_access_token("access-token", std::time::Duration::from_secs(3600));
    let calendar = fake.create_calendar("Classes");
    let hub = hub(&fake, "access-token");
    (fake, hub, calendar)
}

/// A one-hour timed event on 2025-09-01 at `hour` UTC.
pub fn timed_event(id: Option<&str>, hour: u32) -> Event {
    let start = Utc
        .with_ymd_and_hms(2025, 9, 1, hour, 0, 0)
        .single()
        .expect("valid time");
    Event {
        id: id.map(str::to_string),
        summary: Some(format!("Class at {hour}")),
        start: Some(EventDateTime {
            date_time: Some(start),
            ..Default::default()
        }),
        end: Some(EventDateTime {
            date_time: Some(start + chrono::Duration::hours(1)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sets `extendedProperties.private`.
pub fn with_private(mut event: Event, props: &[(&str, &str)]) -> Event {
    event.extended_properties = Some(EventExtendedProperties {
        private: Some(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        shared: None,
    });
    event
}

/// Decodes `Error::BadRequest(json)` into (code, reason, message); panics on other variants.
pub fn google_error(error: Error) -> (u16, String, String) {
    match error {
        Error::BadRequest(value) => {
            let code = value["error"]["code"].as_u64().expect("error.code") as u16;
            let reason = value["error"]["errors"][0]["reason"]
                .as_str()
                .expect("reason")
                .to_string();
            let message = value["error"]["errors"][0]["message"]
                .as_str()
                .expect("message")
                .to_string();
            assert_eq!(value["error"]["message"].as_str(), Some(message.as_str()));
            (code, reason, message)
        }
        other => panic!("expected Error::BadRequest, got {other:?}"),
    }
}

/// A raw HTTP response.
pub struct Raw {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Raw {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

/// A raw HTTP request (plain hyper client).
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<String>,
) -> Raw {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = google_calendar3::hyper::Request::builder()
        .method(method)
        .uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.into())))
        .expect("request");
    let response = client.request(request).await.expect("HTTP request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Raw {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// POSTs a form to the token endpoint.
pub async fn token_request(fake: &FakeGoogle, form: &str) -> Raw {
    http(
        "POST",
        &fake.token_url(),
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await
}

/// A timed recurring event in `tz` starting at the local `start` ("2026-08-31T09:00:00")
/// for `minutes`, with the given recurrence lines.
pub fn recurring_event(id: &str, tz: &str, start: &str, minutes: i64, lines: &[&str]) -> Event {
    let zone: chrono_tz::Tz = tz.parse().expect("time zone");
    let local = chrono::NaiveDateTime::parse_from_str(start, "%Y-%m-%dT%H:%M:%S").expect("start");
    let start = zone
        .from_local_datetime(&local)
        .single()
        .expect("unambiguous start")
        .with_timezone(&Utc);
    Event {
        id: Some(id.to_string()),
        summary: Some("MATH 1750-01".to_string()),
        start: Some(EventDateTime {
            date_time: Some(start),
            time_zone: Some(tz.to_string()),
            ..Default::default()
        }),
        end: Some(EventDateTime {
            date_time: Some(start + chrono::Duration::minutes(minutes)),
            time_zone: Some(tz.to_string()),
            ..Default::default()
        }),
        recurrence: Some(lines.iter().map(|l| l.to_string()).collect()),
        ..Default::default()
    }
}

/// Signs a JWT assertion (RS256) with a PKCS#8 PEM private key.
pub fn sign_assertion(claims: &Value, private_key_pem: &str, kid: Option<&str>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).expect("RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// The standard claims of a service-account assertion for `fake`, valid for an hour.
pub fn sa_claims(fake: &FakeGoogle, iss: &str) -> Value {
    let now = Utc::now().timestamp();
    serde_json::json!({
        "iss": iss,
        "scope": "https://www.googleapis.com/auth/calendar",
        "aud": fake.token_url(),
        "iat": now,
        "exp": now + 3600,
    })
}

/// POSTs a JWT-bearer grant.
pub async fn jwt_grant(fake: &FakeGoogle, assertion: &str) -> Raw {
    token_request(
        fake,
        &format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        ),
    )
    .await
}

/// An access token from the refresh-token grant.
pub async fn refresh_grant(fake: &FakeGoogle, refresh_token: &str) -> String {
    let raw = token_request(
        fake,
        &format!(
            "grant_type=refresh_token&refresh_token={refresh_token}&client_id=c&client_secret=s"
        ),
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    raw.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// An access token for the test service account (registered first).
pub async fn service_account_token(fake: &FakeGoogle) -> String {
    let email = fake.register_test_service_account();
    let assertion = sign_assertion(
        &sa_claims(fake, &email),
        &test_keys::service_account_private_key_pem(),
        Some(test_keys::SERVICE_ACCOUNT_KEY_ID),
    );
    let raw = jwt_grant(fake, &assertion).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let body = raw.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "https://www.googleapis.com/auth/calendar");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for JWT grants"
    );
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}
