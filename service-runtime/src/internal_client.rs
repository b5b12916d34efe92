//! A client for another service's internal HTTP API (login's `/internal/v1` for the GCS, the
//! matchmaker's read API for login): the service token as a bearer on every request, one timeout
//! that covers the connection too, and failures sorted the same way for every caller —
//! unreachable, slow, `429` or `5xx` is [`CallError::Unavailable`] (worth retrying later), `401` or
//! `403` is [`CallError::Unauthorized`] (the token is wrong or the other side has none), anything
//! else unexpected is [`CallError::BadResponse`] (wrong URL, version skew).
//!
//! Callers decode the bodies themselves and map [`CallError`] into their own error enum.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode, header};

/// A bearer-token HTTP client for one service's base URL. Cheap to clone; clones share the
/// connection pool.
#[derive(Clone, Debug)]
pub struct InternalClient {
    http: reqwest::Client,
    /// The base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    base: String,
    /// The `Authorization` header value.
    bearer: String,
}

/// Why an [`InternalClient`] could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// The base URL does not parse, or its scheme is not one the caller allows.
    #[error("{url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the service token is empty")]
    EmptyToken,
    #[error("cannot build the http client: {0}")]
    Build(String),
}

/// Why a call got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Not reachable, timed out, `429` or `5xx`; worth retrying later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// `401` or `403`: the service token was refused, or the other side has none configured.
    #[error("the service token was refused: {0}")]
    Unauthorized(String),
    /// An answer the caller does not understand.
    #[error("unexpected answer: {0}")]
    BadResponse(String),
}

impl InternalClient {
    /// A client for the service at `base_url` (its scheme one of `schemes`, e.g. `["http"]`),
    /// presenting `service_token` (trimmed, not empty), giving up on a request, connection
    /// included, after `timeout`.
    pub fn new(
        base_url: &str,
        service_token: &str,
        timeout: Duration,
        schemes: &[&str],
    ) -> Result<InternalClient, ClientConfigError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        let bad_url = |reason: String| ClientConfigError::Url { url: base_url.to_owned(), reason };
        let url = reqwest::Url::parse(&base).map_err(|e| bad_url(e.to_string()))?;
        if !schemes.contains(&url.scheme()) {
            let expected: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            return Err(bad_url(format!("expected {}", expected.join(" or "))));
        }
        let token = service_token.trim();
        if token.is_empty() {
            return Err(ClientConfigError::EmptyToken);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ClientConfigError::Build(e.to_string()))?;
        Ok(InternalClient { http, base, bearer: format!("Bearer {token}") })
    }

    /// A `GET` of `path` (starting with `/`) under the base URL, with the bearer token.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).header(header::AUTHORIZATION, &self.bearer)
    }

    /// A `POST` to `path` (starting with `/`) under the base URL, with the bearer token.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).header(header::AUTHORIZATION, &self.bearer)
    }
}

/// Sends `req`; not reaching the service, or no answer within the timeout, is
/// [`CallError::Unavailable`]. Any status is returned: see [`status_error`].
pub async fn send(req: RequestBuilder) -> Result<Response, CallError> {
    req.send().await.map_err(|e| CallError::Unavailable(describe(&e)))
}

/// The error for an answer with a `status` the caller did not expect, `detail` saying what it
/// was: `401`/`403` unauthorized, `429`/`5xx` unavailable, anything else a bad response.
pub fn status_error(status: StatusCode, detail: String) -> CallError {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CallError::Unauthorized(detail),
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => CallError::Unavailable(detail),
        _ => CallError::BadResponse(detail),
    }
}

/// The error with its sources, which reqwest keeps apart (`error sending request` alone says
/// little).
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let timeout = Duration::from_secs(1);
        let client = InternalClient::new(" http://127.0.0.1:1// ", " token ", timeout, &["http"]).expect("good settings");
        assert_eq!((client.base.as_str(), client.bearer.as_str()), ("http://127.0.0.1:1", "Bearer token"));
        let err = InternalClient::new("ftp://127.0.0.1:1", "token", timeout, &["http", "https"]).err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("\"ftp://127.0.0.1:1\": expected http:// or https://"));
        assert!(matches!(
            InternalClient::new("not a url", "token", timeout, &["http"]),
            Err(ClientConfigError::Url { .. })
        ));
        assert!(matches!(
            InternalClient::new("http://127.0.0.1:1", " ", timeout, &["http"]),
            Err(ClientConfigError::EmptyToken)
        ));
    }

    #[test]
    fn statuses_are_sorted_into_failures() {
        for (status, unauthorized, unavailable) in [
            (StatusCode::UNAUTHORIZED, true, false),
            (StatusCode::FORBIDDEN, true, false),
            (StatusCode::TOO_MANY_REQUESTS, false, true),
            (StatusCode::SERVICE_UNAVAILABLE, false, true),
            (StatusCode::INTERNAL_SERVER_ERROR, false, true),
            (StatusCode::NOT_FOUND, false, false),
            (StatusCode::BAD_REQUEST, false, false),
        ] {
            let err = status_error(status, String::new());
            assert_eq!(
                (matches!(err, CallError::Unauthorized(_)), matches!(err, CallError::Unavailable(_))),
                (unauthorized, unavailable),
                "{status}: {err:?}"
            );
        }
    }
}
