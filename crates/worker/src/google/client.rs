//! The HTTP side of the Google implementation, shared by token sources and sessions:
//! hyper-rustls (ring) client, the cluster-wide quota (per project and per user, see
//! [`super::limiter`]), per-call timeouts, and the google-calendar3 hub.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use calsync_domain::credentials::Secret;
use google_calendar3::CalendarHub;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use sqlx::PgPool;

use super::{
    GoogleConfig,
    error::{GoogleError, record, retryable},
    limiter::Quota,
};

type Connector = HttpsConnector<HttpConnector>;
type HttpClient = Client<Connector, google_calendar3::common::Body>;
pub(crate) type Hub = CalendarHub<Connector>;

struct Inner {
    config: GoogleConfig,
    http: HttpClient,
    quota: Quota,
}

/// The process-wide Google HTTP client (cheap to clone): one connection pool and one
/// share of the cluster-wide quota, however many sessions.
#[derive(Clone)]
pub struct GoogleClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleClient")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl GoogleClient {
    /// Build the client; its calls draw on the cluster-wide quota kept in `pool`'s
    /// database. Fails on unusable URLs.
    pub fn new(config: GoogleConfig, pool: PgPool) -> Result<GoogleClient, GoogleError> {
        for (name, url) in [
            ("api base URL", &config.api_base_url),
            ("api root URL", &config.api_root_url),
        ] {
            if !url.ends_with('/') || url::Url::parse(url).is_err() {
                return Err(GoogleError::OAuthClient {
                    detail: format!("{name} {url:?} must be an absolute URL ending in '/'"),
                });
            }
        }
        if url::Url::parse(&config.token_url).is_err() {
            return Err(GoogleError::OAuthClient {
                detail: format!("token URL {:?} is not a URL", config.token_url),
            });
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(GoogleClient {
            inner: Arc::new(Inner {
                quota: Quota::new(pool, &config.quota),
                config,
                http,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GoogleConfig {
        &self.inner.config
    }

    /// Wait until a Calendar API call for this student may go out without taking the
    /// project or the student over Google's quota, whichever replica makes it.
    pub async fn throttle(&self, user_id: i64) -> Result<(), GoogleError> {
        self.inner
            .quota
            .acquire(user_id)
            .await
            .map_err(|e| GoogleError::Quota(e.to_string()))
    }

    /// A calendar hub authenticating with `token`.
    pub(crate) fn hub(&self, token: &Secret) -> Hub {
        let mut hub = CalendarHub::new(self.inner.http.clone(), token.expose().to_string());
        hub.base_url(self.inner.config.api_base_url.clone());
        hub.root_url(self.inner.config.api_root_url.clone());
        hub
    }

    /// POST a form to a token endpoint (with the request timeout; not throttled: token
    /// requests do not count against the Calendar API quota); returns the status, the
    /// JSON body (`Null` when it is not JSON) and when the request started (for the
    /// metrics the caller records once it has classified the answer).
    pub(crate) async fn post_form(
        &self,
        url: &str,
        form: String,
    ) -> Result<(u16, serde_json::Value, Instant), GoogleError> {
        let timeout = self.inner.config.request_timeout;
        let req = hyper::Request::post(url)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(
                Full::new(Bytes::from(form))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|e| GoogleError::OAuthClient {
                detail: e.to_string(),
            })?;
        let started = Instant::now();
        let res = tokio::time::timeout(timeout, async {
            let resp = self
                .inner
                .http
                .request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        })
        .await;
        match res {
            Err(_) => {
                record(super::method::TOKEN, "network", started);
                Err(retryable(
                    super::method::TOKEN,
                    format!("timed out after {timeout:?}"),
                    false,
                ))
            }
            Ok(Err(e)) => {
                record(super::method::TOKEN, "network", started);
                Err(retryable(
                    super::method::TOKEN,
                    format!("network error: {e}"),
                    false,
                ))
            }
            Ok(Ok((status, bytes))) => Ok((
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                started,
            )),
        }
    }

    /// The per-call timeout.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }
}
