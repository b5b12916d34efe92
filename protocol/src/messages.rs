//! Constructors and conversions on the generated message types, so callers build envelopes,
//! errors and ids in one line instead of spelling out every field.

use crate::codec::encode_unchecked;
use crate::error::ErrorCode;
use crate::tavern::{
    AckT, ClientBodyT, ClientMessageT, ErrorT, ServerBodyT, ServerMessageT, ServiceBodyT,
    ServiceMessageT, UuidT,
};

/// Builds a generated object-API value (`HelloT`, `ChatSendT`, ...) from the fields given, the
/// others left at their defaults.
///
/// flatc marks table types `#[non_exhaustive]` so that appending a field to the schema breaks no
/// caller; that also forbids struct literals outside this crate, which this macro stands in for.
///
/// ```
/// use protocol::tavern::{ClientBodyT, ClientMessageT, HelloT};
///
/// let token = "eyJ...".to_owned();
/// let hello = protocol::build!(HelloT {
///     protocol_version: protocol::PROTOCOL_VERSION,
///     token: Some(token),
/// });
/// let message = ClientMessageT::request(1, ClientBodyT::Hello(Box::new(hello)));
/// assert_eq!(message.body.as_hello().and_then(|h| h.token.as_deref()), Some("eyJ..."));
/// ```
#[macro_export]
macro_rules! build {
    ($ty:path { $($field:ident $(: $value:expr)?),* $(,)? }) => {{
        #[allow(unused_mut)]
        let mut value = <$ty as ::core::default::Default>::default();
        $( value.$field = $crate::build!(@value $field $(, $value)?); )*
        value
    }};
    (@value $field:ident, $value:expr) => { $value };
    (@value $field:ident) => { $field };
}

/// The longest error message put on the wire, in bytes; longer ones are cut at a character
/// boundary. It keeps an error frame small whatever detail the caller passes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

/// The encoded `ServerMessage` carrying `Error { code, message }` in answer to request `cid`
/// (0 when it answers nothing in particular, e.g. an undecodable frame).
///
/// Infallible: the message is cut to [`MAX_ERROR_MESSAGE_BYTES`], so the frame always fits.
pub fn error_message(cid: u32, code: ErrorCode, message: &str) -> Vec<u8> {
    encode_unchecked(&ServerMessageT::error(cid, code, message))
}

/// Like [`error_message`], with `closes_link` set: the server closes the link after sending it
/// (failed hello, session taken over, shutdown).
pub fn closing_error_message(cid: u32, code: ErrorCode, message: &str) -> Vec<u8> {
    let mut error = ErrorT::new(code, message);
    error.closes_link = true;
    encode_unchecked(&ServerMessageT::response(
        cid,
        ServerBodyT::Error(Box::new(error)),
    ))
}

/// The encoded `ServiceMessage` carrying `Error { code, message }` in answer to request `cid`.
pub fn service_error_message(cid: u32, code: ErrorCode, message: &str) -> Vec<u8> {
    encode_unchecked(&ServiceMessageT::error(cid, code, message))
}

impl ErrorT {
    /// An error with this code and message (cut to [`MAX_ERROR_MESSAGE_BYTES`]).
    pub fn new(code: ErrorCode, message: &str) -> Self {
        Self {
            code: code.code(),
            message: truncate(message, MAX_ERROR_MESSAGE_BYTES).to_owned(),
            closes_link: false,
        }
    }

    /// An error with this code and the code's default message.
    pub fn from_code(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }

    /// The code, if it is one this build knows (a newer peer may send newer codes).
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }
}

impl ClientMessageT {
    /// A request with correlation id `cid` (non-zero; the response carries it back).
    pub fn request(cid: u32, body: ClientBodyT) -> Self {
        Self { cid, body }
    }
}

impl ServerMessageT {
    /// The answer to the request with correlation id `cid`.
    pub fn response(cid: u32, body: ServerBodyT) -> Self {
        Self { cid, body }
    }

    /// A push: a message that answers no request (cid 0).
    pub fn push(body: ServerBodyT) -> Self {
        Self { cid: 0, body }
    }

    /// `Error { code, message }` in answer to `cid`.
    pub fn error(cid: u32, code: ErrorCode, message: &str) -> Self {
        Self::response(
            cid,
            ServerBodyT::Error(Box::new(ErrorT::new(code, message))),
        )
    }

    /// A plain `Ack` of request `cid`.
    pub fn ack(cid: u32) -> Self {
        Self::response(cid, ServerBodyT::Ack(Box::new(AckT {})))
    }
}

impl ServiceMessageT {
    /// A message on a service link with correlation id `cid` (0 for a push that needs no answer).
    pub fn new(cid: u32, body: ServiceBodyT) -> Self {
        Self { cid, body }
    }

    /// `Error { code, message }` in answer to `cid`.
    pub fn error(cid: u32, code: ErrorCode, message: &str) -> Self {
        Self::new(
            cid,
            ServiceBodyT::Error(Box::new(ErrorT::new(code, message))),
        )
    }

    /// A plain `Ack` of request `cid`.
    pub fn ack(cid: u32) -> Self {
        Self::new(cid, ServiceBodyT::Ack(Box::new(AckT {})))
    }
}

impl UuidT {
    /// The all-zero id, which no real entity has.
    pub const NIL: UuidT = UuidT { bytes: [0; 16] };

    /// An id from its 16 bytes (e.g. `uuid::Uuid::into_bytes()`).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self { bytes }
    }

    /// The 16 bytes (e.g. for `uuid::Uuid::from_bytes`).
    pub const fn to_bytes(&self) -> [u8; 16] {
        self.bytes
    }

    /// True for [`UuidT::NIL`].
    pub fn is_nil(&self) -> bool {
        self.bytes == [0; 16]
    }
}

impl From<[u8; 16]> for UuidT {
    fn from(bytes: [u8; 16]) -> Self {
        Self { bytes }
    }
}

impl From<UuidT> for [u8; 16] {
    fn from(id: UuidT) -> Self {
        id.bytes
    }
}

impl std::fmt::Display for UuidT {
    /// The canonical hyphenated lowercase form, as in logs and the REST API.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, byte) in self.bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let cases = [
            ("short", "short".to_owned()),
            (&"é".repeat(300), "é".repeat(256)),
            (
                &format!("a{}", "é".repeat(300)),
                format!("a{}", "é".repeat(255)),
            ),
        ];
        for (input, want) in cases {
            let error = ErrorT::new(ErrorCode::Internal, input);
            assert_eq!(error.message, want, "input of {} bytes", input.len());
            assert!(error.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        }
    }

    #[test]
    fn uuid_displays_in_canonical_form() {
        let id = UuidT::from_bytes([
            0x67, 0xe5, 0x50, 0x44, 0x10, 0xb1, 0x42, 0x6f, 0x92, 0x47, 0xbb, 0x68, 0x0e, 0x5f,
            0xe0, 0xc8,
        ]);
        assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert!(UuidT::NIL.is_nil() && !id.is_nil());
    }
}
