//! The service-token gate of the APIs for trusted services (login's and the matchmaker's
//! `/internal/v1`, the token service's `/v1`): `Authorization: Bearer <service token>` compared in
//! constant time, and the `forbidden` / `unauthenticated` / `token_invalid` answers.
//!
//! The configured token is kept only as its SHA-256 digest, and a presented token is digested
//! before the comparison: comparing fixed-size digests in constant time leaks neither the token's
//! bytes nor its length.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;

/// The shortest service token a service accepts in its config.
pub const MIN_SERVICE_TOKEN_LEN: usize = 16;

/// A configured service token, or none (the API it guards is off). Holds only the digest; cheap to
/// copy into every router that needs it.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceToken {
    /// SHA-256 of the token; `None` when no token is configured, so every request is refused.
    digest: Option<[u8; 32]>,
}

/// A configured service token shorter than [`MIN_SERVICE_TOKEN_LEN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("service_token must be at least {MIN_SERVICE_TOKEN_LEN} characters")]
pub struct ServiceTokenTooShort;

/// How a request stands towards the service token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceAuth {
    /// No service token is configured: the API is off.
    Disabled,
    /// No bearer token was presented (or an empty one).
    Missing,
    /// A bearer token was presented and it is not the service token.
    Wrong,
    Trusted,
}

impl ServiceToken {
    /// The configured `token` (trimmed): disabled when unset or empty, an error when set but
    /// shorter than [`MIN_SERVICE_TOKEN_LEN`].
    pub fn hash(token: Option<&str>) -> Result<ServiceToken, ServiceTokenTooShort> {
        match token.map(str::trim) {
            Some(t) if !t.is_empty() && t.len() < MIN_SERVICE_TOKEN_LEN => Err(ServiceTokenTooShort),
            t => Ok(ServiceToken::digest(t.unwrap_or_default())),
        }
    }

    /// `token` (trimmed) without the length rule, for callers whose config already enforced it;
    /// disabled when empty.
    pub fn digest(token: &str) -> ServiceToken {
        let token = token.trim();
        ServiceToken { digest: (!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into()) }
    }

    /// Whether a token is configured.
    pub fn is_enabled(&self) -> bool {
        self.digest.is_some()
    }

    /// How the bearer token in `headers` stands towards this one.
    pub fn auth(&self, headers: &HeaderMap) -> ServiceAuth {
        let Some(expected) = &self.digest else { return ServiceAuth::Disabled };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = presented else { return ServiceAuth::Missing };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) { ServiceAuth::Trusted } else { ServiceAuth::Wrong }
    }

    /// `Ok` for the service token; otherwise the answer: `forbidden` when no token is configured,
    /// `unauthenticated` without a bearer token, `token_invalid` (logged) for a wrong one.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.auth(headers) {
            ServiceAuth::Trusted => Ok(()),
            ServiceAuth::Disabled => {
                Err(ApiError::msg(ErrorCode::Forbidden, "the internal API is disabled: no service_token is configured"))
            }
            ServiceAuth::Missing => Err(ApiError::msg(ErrorCode::Unauthenticated, "a service bearer token is required")),
            ServiceAuth::Wrong => {
                tracing::warn!("request with a wrong service token");
                Err(ApiError::msg(ErrorCode::TokenInvalid, "invalid service token"))
            }
        }
    }
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Even the digest stays out of logs: it would let a leaked log confirm a guess offline.
        f.write_str(if self.is_enabled() { "ServiceToken(configured)" } else { "ServiceToken(none)" })
    }
}

/// Middleware that lets a request through only with the service token:
/// `route_layer(axum::middleware::from_fn_with_state(token, require_service_token))`.
pub async fn require_service_token(State(token): State<ServiceToken>, req: Request, next: Next) -> Response {
    match token.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "a-service-token-0123456789";

    fn check(token: ServiceToken, authorization: Option<&str>, expected: ServiceAuth) {
        let mut headers = HeaderMap::new();
        if let Some(v) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header value"));
        }
        assert_eq!(token.auth(&headers), expected, "{authorization:?}");
        let code = token.check(&headers).err().map(|e| e.code);
        let expected_code = match expected {
            ServiceAuth::Trusted => None,
            ServiceAuth::Disabled => Some(ErrorCode::Forbidden),
            ServiceAuth::Missing => Some(ErrorCode::Unauthenticated),
            ServiceAuth::Wrong => Some(ErrorCode::TokenInvalid),
        };
        assert_eq!(code, expected_code, "{authorization:?}");
    }

    #[test]
    fn bearers_are_sorted_by_how_they_stand() {
        let token = ServiceToken::hash(Some(TOKEN)).expect("long enough");
        check(token, Some(&format!("Bearer {TOKEN}")), ServiceAuth::Trusted);
        check(token, Some(&format!("bearer  {TOKEN} ")), ServiceAuth::Trusted);
        check(token, None, ServiceAuth::Missing);
        check(token, Some("Bearer "), ServiceAuth::Missing);
        check(token, Some(&format!("Basic {TOKEN}")), ServiceAuth::Missing);
        check(token, Some(&format!("Bearer {}", &TOKEN[..20])), ServiceAuth::Wrong);
        check(token, Some("Bearer short"), ServiceAuth::Wrong);
        for disabled in [ServiceToken::hash(None).expect("none"), ServiceToken::digest(" "), ServiceToken::default()] {
            check(disabled, Some(&format!("Bearer {TOKEN}")), ServiceAuth::Disabled);
            check(disabled, None, ServiceAuth::Disabled);
        }
    }

    #[test]
    fn configured_tokens_are_trimmed_and_checked_for_length() {
        assert_eq!(ServiceToken::hash(Some(&format!("  {TOKEN}\n"))), Ok(ServiceToken::digest(TOKEN)));
        assert_eq!(ServiceToken::hash(Some("too-short")), Err(ServiceTokenTooShort));
        assert!(!ServiceToken::hash(Some("")).expect("empty is off").is_enabled());
        // `digest` leaves the length to the caller's config.
        assert!(ServiceToken::digest("short").is_enabled());
        assert_eq!(format!("{:?}", ServiceToken::digest(TOKEN)), "ServiceToken(configured)");
    }
}
