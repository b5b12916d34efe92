//! Session tokens: JWT HS256 with `kid` in the header and `sub`, `usn`, `sid`, `iat`, `iatms`,
//! `exp` as claims. Minting and verifying are plain functions of the keyring and `now`.
//!
//! Verification order: shape and size, algorithm (HS256 only, so `none` and RS256 headers are
//! refused before any key is touched), key id known, signature (constant-time, inside
//! jsonwebtoken), claims, expiry, then the local revocation cache. No network hop.
//!
//! `iatms` carries the issue time in milliseconds: "log out everywhere" revokes every token issued
//! before a cutoff, and second precision would either spare tokens minted earlier in the same
//! second or kill the fresh token a password change hands back to its caller.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metrics::TokenMetrics;
use crate::revocation::Revocations;
use crate::{Keyring, TokenError};

/// Seconds of clock skew tolerated past `exp`, between the process that minted a token and the
/// one verifying it.
pub const EXPIRY_LEEWAY_S: i64 = 5;

/// Tokens longer than this are refused unparsed (a real one is about 400 bytes).
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a verified session token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionClaims {
    pub user_id: Uuid,
    pub username: String,
    pub session_id: Uuid,
    pub issued_at_s: i64,
    /// The issue time with millisecond precision, compared against "revoke all before" cutoffs.
    pub issued_at_ms: i64,
    pub expires_at_s: i64,
    /// The key that signed it.
    pub kid: String,
}

/// A freshly minted session token.
#[derive(Clone, Debug)]
pub struct MintedSession {
    pub token: String,
    pub expires_at_ms: i64,
}

/// The JWT body.
#[derive(Serialize, Deserialize)]
struct JwtClaims {
    sub: String,
    usn: String,
    sid: String,
    iat: i64,
    #[serde(default)]
    iatms: Option<i64>,
    exp: i64,
}

/// Verifies session tokens against a keyring and a revocation cache: what a process that only
/// checks tokens (GCS, instance servers) holds. Cheap to clone.
#[derive(Clone)]
pub struct SessionVerifier {
    keyring: Keyring,
    revocations: Arc<dyn Revocations>,
    metrics: TokenMetrics,
}

impl SessionVerifier {
    pub fn new(keyring: Keyring, revocations: Arc<dyn Revocations>) -> SessionVerifier {
        SessionVerifier { keyring, revocations, metrics: TokenMetrics::new() }
    }

    /// Shares `metrics` (for example a [`crate::Tokens`]' metrics) instead of private ones.
    pub fn with_metrics(mut self, metrics: TokenMetrics) -> SessionVerifier {
        self.metrics = metrics;
        self
    }

    /// Signature, key id, expiry, then revocation; see the module docs for the order.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<SessionClaims, TokenError> {
        let result = decode(&self.keyring, token, now_ms).and_then(|claims| {
            if self.revocations.is_revoked(&claims, now_ms) { Err(TokenError::Revoked) } else { Ok(claims) }
        });
        match &result {
            Ok(_) => self.metrics.verified.with_label_values(&["session"]).inc(),
            Err(e) => self.metrics.verify_failures.with_label_values(&["session", e.reason()]).inc(),
        }
        result
    }

    /// The revocation cache this verifier consults (GCS subscribes to it to close live links).
    pub fn revocations(&self) -> &Arc<dyn Revocations> {
        &self.revocations
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }
}

/// Signs a session token with the active key.
pub(crate) fn encode(
    keyring: &Keyring,
    user_id: Uuid,
    username: &str,
    session_id: Uuid,
    now_ms: i64,
    ttl_s: u64,
) -> Result<MintedSession, TokenError> {
    let iat = now_ms.div_euclid(1000);
    let ttl = i64::try_from(ttl_s).map_err(|_| invalid_ttl(ttl_s))?;
    let exp = iat.checked_add(ttl).ok_or_else(|| invalid_ttl(ttl_s))?;
    let claims = JwtClaims {
        sub: user_id.to_string(),
        usn: username.to_owned(),
        sid: session_id.to_string(),
        iat,
        iatms: Some(now_ms),
        exp,
    };
    let active = keyring.active();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(active.key.kid.clone());
    let token =
        jsonwebtoken::encode(&header, &claims, &active.encoding).map_err(|e| TokenError::Encode(e.to_string()))?;
    Ok(MintedSession { token, expires_at_ms: exp.saturating_mul(1000) })
}

/// Everything but the revocation check.
pub(crate) fn decode(keyring: &Keyring, token: &str, now_ms: i64) -> Result<SessionClaims, TokenError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        // An `alg` jsonwebtoken does not know (such as "none") fails to parse as a header.
        jsonwebtoken::errors::ErrorKind::Json(_) if header_names_other_alg(token) => TokenError::BadAlgorithm,
        _ => TokenError::Malformed,
    })?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenError::BadAlgorithm);
    }
    let kid = header.kid.ok_or(TokenError::Malformed)?;
    let entry = keyring.get(&kid).ok_or_else(|| TokenError::UnknownKey { kid: kid.clone() })?;

    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked below against the injected clock, not jsonwebtoken's system clock.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<JwtClaims>(token, &entry.decoding, &validation).map_err(|e| {
        match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::BadAlgorithm,
            _ => TokenError::Malformed,
        }
    })?;
    let c = data.claims;
    let user_id = Uuid::parse_str(&c.sub).map_err(|_| TokenError::Malformed)?;
    let session_id = Uuid::parse_str(&c.sid).map_err(|_| TokenError::Malformed)?;
    if c.exp < c.iat {
        return Err(TokenError::Malformed);
    }
    let issued_at_ms = c.iatms.unwrap_or_else(|| c.iat.saturating_mul(1000));
    let deadline_ms = c.exp.saturating_add(EXPIRY_LEEWAY_S).saturating_mul(1000);
    if now_ms >= deadline_ms {
        return Err(TokenError::Expired);
    }
    Ok(SessionClaims {
        user_id,
        username: c.usn,
        session_id,
        issued_at_s: c.iat,
        issued_at_ms,
        expires_at_s: c.exp,
        kid,
    })
}

/// Whether the header parses as JSON with an `alg` jsonwebtoken does not support.
fn header_names_other_alg(token: &str) -> bool {
    use base64::Engine;
    let Some(first) = token.split('.').next() else { return false };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(first) else { return false };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => v.get("alg").and_then(serde_json::Value::as_str).is_some_and(|a| a != "HS256"),
        Err(_) => false,
    }
}

fn invalid_ttl(ttl_s: u64) -> TokenError {
    TokenError::InvalidInput { field: "session_ttl_s", reason: format!("{ttl_s} is out of range") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_with_millisecond_issue_time() {
        let ring = Keyring::generate();
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let minted = encode(&ring, user, "ada", session, 1_700_000_000_123, 900).expect("mint");
        assert_eq!(minted.expires_at_ms, 1_700_000_900_000);
        let claims = decode(&ring, &minted.token, 1_700_000_000_500).expect("verify");
        assert_eq!(
            claims,
            SessionClaims {
                user_id: user,
                username: "ada".into(),
                session_id: session,
                issued_at_s: 1_700_000_000,
                issued_at_ms: 1_700_000_000_123,
                expires_at_s: 1_700_000_900,
                kid: ring.active_kid().to_owned(),
            }
        );
    }

    #[test]
    fn expiry_allows_exactly_the_leeway() {
        let ring = Keyring::generate();
        let t = encode(&ring, Uuid::new_v4(), "ada", Uuid::new_v4(), 1_000_000, 60).expect("mint").token;
        let exp_ms = (1_000 + 60) * 1000;
        assert!(decode(&ring, &t, exp_ms + EXPIRY_LEEWAY_S * 1000 - 1).is_ok());
        assert!(matches!(decode(&ring, &t, exp_ms + EXPIRY_LEEWAY_S * 1000), Err(TokenError::Expired)));
    }
}
