//! Reading a join token's match id before verifying it, only to route a new link to its match
//! in high-density mode. The match then verifies the whole token with the `JoinVerifier` against
//! its own id, so a forged match id can only reach a match that refuses it.
//!
//! The payload layout is token-service's (`token-service/src/join.rs`):
//! `version (1) | kid len (1) | kid | match id (16) | …`, base64url without padding, then `.` and
//! the MAC.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use protocol::ErrorCode;
use token_service::TokenError;

/// The token's claimed match id, unverified; `None` for anything that is not shaped like a join
/// token of version 1.
pub(crate) fn peek_match_id(token: &str) -> Option<Uuid> {
    // Far above any real token; bounds the work done on hostile input before verification.
    if token.len() > 1024 {
        return None;
    }
    let (payload, _) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    if *payload.first()? != 1 {
        return None;
    }
    let kid_len = usize::from(*payload.get(1)?);
    let start = 2 + kid_len;
    let bytes = payload.get(start..start + 16)?;
    Uuid::from_slice(bytes).ok()
}

/// The code a refused join is answered with. Expired and forged tokens (bad MAC, unknown key)
/// share `join_token_invalid`: the client can do nothing different about either.
pub(crate) fn join_code(e: &TokenError) -> ErrorCode {
    match e {
        TokenError::JoinWrongMatch => ErrorCode::JoinTokenWrongMatch,
        TokenError::JoinReplayed => ErrorCode::JoinTokenReplayed,
        TokenError::JoinCapacity { .. } => ErrorCode::Unavailable,
        TokenError::Encode(_) => ErrorCode::Internal,
        _ => ErrorCode::JoinTokenInvalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_service::{JoinIssuer, Keyring};

    #[test]
    fn peeks_the_match_id_of_a_real_token_and_nothing_of_garbage() {
        let issuer = match JoinIssuer::new(Keyring::generate(), 30) {
            Ok(i) => i,
            Err(e) => panic!("issuer: {e}"),
        };
        let match_id = Uuid::new_v4();
        let token = match issuer.mint(match_id, Uuid::new_v4(), "inst", 1_000) {
            Ok(t) => t,
            Err(e) => panic!("mint: {e}"),
        };
        assert_eq!(peek_match_id(&token), Some(match_id));
        for garbage in ["", ".", "abc", "AQ.x", "!!!.x", &"A".repeat(5000)] {
            assert_eq!(peek_match_id(garbage), None, "{garbage:.20}");
        }
    }
}
