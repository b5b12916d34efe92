//! Join tokens: what a player hands an instance server to take their seat in one match.
//!
//! Wire form: `base64url(payload) "." base64url(HMAC-SHA256(join key of kid, payload))`, where
//! the payload is `version (1) | kid len (1) | kid | match id (16) | user id (16) |
//! instance id len (1) | instance id | expires at ms (8, big-endian) | nonce (16)`. The join key
//! is derived from the keyring secret, so join and session tokens never verify as each other.
//!
//! A token lives at most [`MAX_JOIN_TTL_S`] seconds, enforced when minting and again when
//! verifying. The verifier accepts each nonce once, remembering it until the token expires; its
//! memory is bounded and when full it refuses new tokens rather than forget old nonces (which
//! would let them replay).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use rand::RngCore;
use rand::rngs::OsRng;
use uuid::Uuid;

use crate::metrics::TokenMetrics;
use crate::{Keyring, TokenError};

/// The longest life of a join token.
pub const MAX_JOIN_TTL_S: u64 = 60;

/// Clock skew tolerated between the minting process and the instance server when checking that
/// a token does not claim more than [`MAX_JOIN_TTL_S`] of life.
pub const JOIN_SKEW_MS: i64 = 5_000;

/// The longest instance id accepted.
pub const MAX_INSTANCE_ID_LEN: usize = 128;

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// Tokens longer than this are refused undecoded.
const MAX_TOKEN_LEN: usize = 600;

/// What a verified join token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinClaims {
    pub match_id: Uuid,
    pub user_id: Uuid,
    pub instance_id: String,
    pub expires_at_ms: i64,
    pub nonce: [u8; 16],
}

/// Mints join tokens (matchmaker, token service). Cheap to clone.
#[derive(Clone, Debug)]
pub struct JoinIssuer {
    keyring: Keyring,
    ttl_ms: i64,
}

impl JoinIssuer {
    /// An issuer whose tokens live `ttl_s` seconds (1 to [`MAX_JOIN_TTL_S`]).
    pub fn new(keyring: Keyring, ttl_s: u64) -> Result<JoinIssuer, TokenError> {
        if !(1..=MAX_JOIN_TTL_S).contains(&ttl_s) {
            return Err(TokenError::InvalidInput {
                field: "join_ttl_s",
                reason: format!("{ttl_s} is outside 1..={MAX_JOIN_TTL_S}"),
            });
        }
        Ok(JoinIssuer { keyring, ttl_ms: ttl_s as i64 * 1000 })
    }

    /// How long minted tokens live, in milliseconds.
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// A token for `user_id` to join `match_id` on `instance_id`, expiring `ttl` after `now_ms`.
    pub fn mint(&self, match_id: Uuid, user_id: Uuid, instance_id: &str, now_ms: i64) -> Result<String, TokenError> {
        if instance_id.is_empty() || instance_id.len() > MAX_INSTANCE_ID_LEN {
            return Err(TokenError::InvalidInput {
                field: "instance_id",
                reason: format!("must be 1 to {MAX_INSTANCE_ID_LEN} bytes, got {}", instance_id.len()),
            });
        }
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let claims = JoinClaims {
            match_id,
            user_id,
            instance_id: instance_id.to_owned(),
            expires_at_ms: now_ms.saturating_add(self.ttl_ms),
            nonce,
        };
        Ok(sign(&self.keyring, self.keyring.active_kid(), &claims))
    }
}

/// Verifies join tokens on an instance server. One verifier can serve many matches (high-density
/// mode): the match and instance are arguments of [`JoinVerifier::verify`].
pub struct JoinVerifier {
    keyring: Keyring,
    max_tracked: usize,
    seen: Mutex<Seen>,
    metrics: TokenMetrics,
}

/// Nonces accepted and not yet expired, with a min-heap by expiry so sweeping is cheap.
#[derive(Default)]
struct Seen {
    nonces: HashMap<[u8; 16], i64>,
    by_expiry: BinaryHeap<Reverse<(i64, [u8; 16])>>,
    /// The latest `now` seen. Expiry is judged against it, so a caller whose clock steps back
    /// cannot replay a nonce that was already forgotten as expired.
    high_water_ms: i64,
}

impl JoinVerifier {
    /// A verifier that remembers at most `max_tracked` unexpired nonces.
    pub fn new(keyring: Keyring, max_tracked: usize) -> JoinVerifier {
        JoinVerifier {
            keyring,
            max_tracked: max_tracked.max(1),
            seen: Mutex::new(Seen { high_water_ms: i64::MIN, ..Seen::default() }),
            metrics: TokenMetrics::new(),
        }
    }

    /// Shares `metrics` instead of private ones.
    pub fn with_metrics(mut self, metrics: TokenMetrics) -> JoinVerifier {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &TokenMetrics {
        &self.metrics
    }

    /// Checks the MAC (constant-time), the expiry and lifetime, that the token is for this match
    /// and instance, and that its nonce was not used before; then remembers the nonce.
    pub fn verify(&self, token: &str, match_id: Uuid, instance_id: &str, now_ms: i64) -> Result<JoinClaims, TokenError> {
        let result = self.check(token, match_id, instance_id, now_ms);
        match &result {
            Ok(_) => self.metrics.verified.with_label_values(&["join"]).inc(),
            Err(e) => self.metrics.verify_failures.with_label_values(&["join", e.reason()]).inc(),
        }
        result
    }

    /// How many nonces are remembered now.
    pub fn tracked(&self) -> usize {
        self.seen.lock().map(|s| s.nonces.len()).unwrap_or(0)
    }

    fn check(&self, token: &str, match_id: Uuid, instance_id: &str, now_ms: i64) -> Result<JoinClaims, TokenError> {
        let claims = open(&self.keyring, token)?;
        let mut seen = self.seen.lock().map_err(|_| TokenError::Encode("join verifier lock poisoned".into()))?;
        seen.high_water_ms = seen.high_water_ms.max(now_ms);
        let now = seen.high_water_ms;
        if claims.expires_at_ms <= now {
            return Err(TokenError::JoinExpired);
        }
        if claims.expires_at_ms > now.saturating_add(MAX_JOIN_TTL_S as i64 * 1000 + JOIN_SKEW_MS) {
            return Err(TokenError::JoinInvalid);
        }
        // Checked before the nonce, so a token shown to the wrong server is not burnt.
        if claims.match_id != match_id || claims.instance_id != instance_id {
            return Err(TokenError::JoinWrongMatch);
        }
        let swept = seen.sweep(now);
        self.metrics.join_nonces.sub(swept as i64);
        if seen.nonces.contains_key(&claims.nonce) {
            return Err(TokenError::JoinReplayed);
        }
        if seen.nonces.len() >= self.max_tracked {
            return Err(TokenError::JoinCapacity { max: self.max_tracked });
        }
        seen.nonces.insert(claims.nonce, claims.expires_at_ms);
        seen.by_expiry.push(Reverse((claims.expires_at_ms, claims.nonce)));
        self.metrics.join_nonces.inc();
        Ok(claims)
    }
}

impl Seen {
    /// Forgets nonces that expired at or before `now`; returns how many.
    fn sweep(&mut self, now: i64) -> usize {
        let mut removed = 0;
        while let Some(Reverse((exp, nonce))) = self.by_expiry.peek().copied() {
            if exp > now {
                break;
            }
            self.by_expiry.pop();
            if self.nonces.get(&nonce) == Some(&exp) {
                self.nonces.remove(&nonce);
                removed += 1;
            }
        }
        removed
    }
}

/// Encodes and MACs `claims` with key `kid`.
fn sign(keyring: &Keyring, kid: &str, claims: &JoinClaims) -> String {
    let payload = encode_payload(kid, claims);
    let tag = match keyring.get(kid) {
        Some(entry) => {
            let mut mac = entry.join_mac.clone();
            mac.update(&payload);
            mac.finalize().into_bytes().to_vec()
        }
        None => Vec::new(),
    };
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag))
}

fn encode_payload(kid: &str, c: &JoinClaims) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + 1 + kid.len() + 32 + 1 + c.instance_id.len() + 8 + 16);
    p.push(VERSION);
    // Key ids are at most 64 bytes and instance ids at most 128 (checked at mint), so both fit.
    p.push(kid.len() as u8);
    p.extend_from_slice(kid.as_bytes());
    p.extend_from_slice(c.match_id.as_bytes());
    p.extend_from_slice(c.user_id.as_bytes());
    p.push(c.instance_id.len() as u8);
    p.extend_from_slice(c.instance_id.as_bytes());
    p.extend_from_slice(&c.expires_at_ms.to_be_bytes());
    p.extend_from_slice(&c.nonce);
    p
}

/// Decodes the token, finds its key and verifies the MAC; the claims are not trusted before.
fn open(keyring: &Keyring, token: &str) -> Result<JoinClaims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::JoinInvalid);
    }
    let (p64, t64) = token.split_once('.').ok_or(TokenError::JoinInvalid)?;
    let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| TokenError::JoinInvalid)?;
    let tag = URL_SAFE_NO_PAD.decode(t64).map_err(|_| TokenError::JoinInvalid)?;
    if tag.len() != TAG_LEN {
        return Err(TokenError::JoinInvalid);
    }
    let mut r = Reader(&payload);
    if r.u8()? != VERSION {
        return Err(TokenError::JoinInvalid);
    }
    let kid_len = usize::from(r.u8()?);
    let kid = std::str::from_utf8(r.take(kid_len)?).map_err(|_| TokenError::JoinInvalid)?;
    let entry = keyring.get(kid).ok_or_else(|| TokenError::UnknownKey { kid: kid.to_owned() })?;
    let mut mac = entry.join_mac.clone();
    mac.update(&payload);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&tag).map_err(|_| TokenError::JoinInvalid)?;

    let match_id = Uuid::from_slice(r.take(16)?).map_err(|_| TokenError::JoinInvalid)?;
    let user_id = Uuid::from_slice(r.take(16)?).map_err(|_| TokenError::JoinInvalid)?;
    let inst_len = usize::from(r.u8()?);
    let instance_id = std::str::from_utf8(r.take(inst_len)?).map_err(|_| TokenError::JoinInvalid)?.to_owned();
    let expires_at_ms = i64::from_be_bytes(r.array::<8>()?);
    let nonce = r.array::<16>()?;
    if !r.0.is_empty() {
        return Err(TokenError::JoinInvalid);
    }
    Ok(JoinClaims { match_id, user_id, instance_id, expires_at_ms, nonce })
}

/// A bounds-checked cursor over the payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::JoinInvalid);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TokenError> {
        self.take(1)?.first().copied().ok_or(TokenError::JoinInvalid)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        self.take(N)?.try_into().map_err(|_| TokenError::JoinInvalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens a correct issuer never mints, signed with the real key: only the verifier's own
    /// checks stand between them and acceptance.
    fn crafted(ring: &Keyring, expires_at_ms: i64) -> (String, JoinClaims) {
        let claims = JoinClaims {
            match_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            instance_id: "inst-1".into(),
            expires_at_ms,
            nonce: [7; 16],
        };
        (sign(ring, ring.active_kid(), &claims), claims)
    }

    #[test]
    fn verifier_caps_the_lifetime_a_token_claims() {
        let ring = Keyring::generate();
        let v = JoinVerifier::new(ring.clone(), 16);
        let now = 1_000_000;
        let (long, c) = crafted(&ring, now + 120_000);
        assert!(matches!(v.verify(&long, c.match_id, "inst-1", now), Err(TokenError::JoinInvalid)));
        let (ok, c) = crafted(&ring, now + MAX_JOIN_TTL_S as i64 * 1000);
        assert_eq!(v.verify(&ok, c.match_id, "inst-1", now).expect("within the cap"), c);
    }

    #[test]
    fn trailing_bytes_and_truncation_are_refused() {
        let ring = Keyring::generate();
        let (_, c) = crafted(&ring, 2_000);
        let mut payload = encode_payload(ring.active_kid(), &c);
        payload.push(0);
        let mut mac = ring.active().join_mac.clone();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let token = format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag));
        assert!(matches!(open(&ring, &token), Err(TokenError::JoinInvalid)));
        for cut in [0, 1, 2, 10, 40] {
            let short = URL_SAFE_NO_PAD.encode(&payload[..cut]);
            assert!(open(&ring, &format!("{short}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]))).is_err());
        }
    }

    #[test]
    fn a_clock_stepping_back_cannot_replay_a_forgotten_nonce() {
        let ring = Keyring::generate();
        let v = JoinVerifier::new(ring.clone(), 1);
        let (t1, c1) = crafted(&ring, 10_000);
        v.verify(&t1, c1.match_id, "inst-1", 5_000).expect("first use");
        // At 10 s the nonce expires and is swept when the next token arrives.
        let mut c2 = c1.clone();
        c2.nonce = [8; 16];
        c2.expires_at_ms = 20_000;
        let t2 = sign(&ring, ring.active_kid(), &c2);
        v.verify(&t2, c2.match_id, "inst-1", 10_000).expect("room after the sweep");
        // A caller with a clock behind cannot use the forgotten first token again.
        assert!(matches!(v.verify(&t1, c1.match_id, "inst-1", 5_000), Err(TokenError::JoinExpired)));
    }
}
