//! The one error type of the token library, and the stable protocol code each variant maps to.

use protocol::ErrorCode;

/// Why a token could not be minted, verified, rotated or revoked.
///
/// Callers match on the variant; clients only ever see [`TokenError::code`], so the detail of a
/// rejection (forged, unknown key, wrong algorithm) never helps an attacker beyond the code.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not a well-formed session token (shape, base64, JSON, claims, length).
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("token algorithm is not hs256")]
    BadAlgorithm,
    /// The signature does not verify with the key the token names.
    #[error("token signature does not verify")]
    BadSignature,
    /// The token names a key id this keyring does not hold (never issued here, or retired).
    #[error("token signed with unknown key {kid:?}")]
    UnknownKey { kid: String },
    /// The session token's `exp` (plus the leeway) has passed.
    #[error("token expired")]
    Expired,
    /// The session, or every session of the user up to a cutoff, was revoked.
    #[error("token revoked")]
    Revoked,
    /// The refresh token is unknown, expired or belongs to a revoked family.
    #[error("invalid refresh token")]
    RefreshInvalid,
    /// A spent refresh token was presented again; its family and session are now revoked.
    #[error("refresh token reuse detected")]
    RefreshReused,
    /// The join token is malformed, forged, of an unknown version or claims too long a life.
    #[error("invalid join token")]
    JoinInvalid,
    /// The join token has expired.
    #[error("join token expired")]
    JoinExpired,
    /// The join token's nonce was already accepted by this verifier.
    #[error("join token already used")]
    JoinReplayed,
    /// The join token is for another match or another instance.
    #[error("join token is for another match or instance")]
    JoinWrongMatch,
    /// The verifier tracks as many unexpired nonces as it may; it refuses rather than forgets.
    #[error("join verifier is full ({max} unexpired nonces tracked)")]
    JoinCapacity { max: usize },
    /// A signing secret is shorter than 256 bits.
    #[error("signing key {kid:?} is {len} bytes, at least 32 are required")]
    KeyTooShort { kid: String, len: usize },
    /// A key id is malformed or duplicated, a secret is not base64, the active key is missing.
    #[error("invalid signing key: {0}")]
    InvalidKey(String),
    /// The key file could not be read, parsed or written.
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    /// An argument is out of range (a lifetime, an instance id, a username).
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// The refresh token store failed.
    #[error("token store: {0}")]
    Store(#[from] sqlx::Error),
    /// The revocation bus (Redis) failed.
    #[error("revocation bus: {0}")]
    Bus(String),
    /// Local I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding a token failed; this is a bug, not an input problem.
    #[error("cannot encode token: {0}")]
    Encode(String),
}

impl TokenError {
    /// The stable code a client is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Malformed | TokenError::BadAlgorithm | TokenError::BadSignature => ErrorCode::TokenInvalid,
            TokenError::UnknownKey { .. } => ErrorCode::UnknownKey,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::Revoked => ErrorCode::TokenRevoked,
            TokenError::RefreshInvalid => ErrorCode::RefreshTokenInvalid,
            TokenError::RefreshReused => ErrorCode::RefreshTokenReused,
            TokenError::JoinInvalid | TokenError::JoinExpired => ErrorCode::JoinTokenInvalid,
            TokenError::JoinReplayed => ErrorCode::JoinTokenReplayed,
            TokenError::JoinWrongMatch => ErrorCode::JoinTokenWrongMatch,
            TokenError::InvalidInput { .. } => ErrorCode::InvalidField,
            TokenError::JoinCapacity { .. } | TokenError::Bus(_) => ErrorCode::Unavailable,
            TokenError::Store(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => ErrorCode::Unavailable,
                // The one foreign key of `refresh_tokens` is its user.
                sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
                    ErrorCode::UserNotFound
                }
                _ => ErrorCode::Internal,
            },
            TokenError::KeyTooShort { .. }
            | TokenError::InvalidKey(_)
            | TokenError::KeyFile { .. }
            | TokenError::Io(_)
            | TokenError::Encode(_) => ErrorCode::Internal,
        }
    }

    /// A stable, low-cardinality name of the variant, for metric labels and log fields.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadAlgorithm => "bad_algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::UnknownKey { .. } => "unknown_key",
            TokenError::Expired => "expired",
            TokenError::Revoked => "revoked",
            TokenError::RefreshInvalid => "refresh_invalid",
            TokenError::RefreshReused => "refresh_reused",
            TokenError::JoinInvalid => "join_invalid",
            TokenError::JoinExpired => "join_expired",
            TokenError::JoinReplayed => "join_replayed",
            TokenError::JoinWrongMatch => "join_wrong_match",
            TokenError::JoinCapacity { .. } => "join_capacity",
            TokenError::KeyTooShort { .. } => "key_too_short",
            TokenError::InvalidKey(_) => "invalid_key",
            TokenError::KeyFile { .. } => "key_file",
            TokenError::InvalidInput { .. } => "invalid_input",
            TokenError::Store(_) => "store",
            TokenError::Bus(_) => "bus",
            TokenError::Io(_) => "io",
            TokenError::Encode(_) => "encode",
        }
    }
}
