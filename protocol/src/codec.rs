//! The envelope codec: turns `ClientMessage`, `ServerMessage` and `ServiceMessage` bytes into
//! owned, verified messages and back, within size and shape [`Limits`]. Sans-IO and clock-free.
//!
//! Every decode runs the FlatBuffers verifier before anything reads the bytes, so a malformed,
//! truncated or hostile envelope becomes a [`DecodeError`] (with an [`ErrorCode`] for the reply),
//! never a panic or an out-of-bounds read.
//!
//! ```
//! use protocol::tavern::{ClientBodyT, ClientMessageT, PingT};
//! use protocol::Codec;
//!
//! let codec = Codec::default();
//! let ping = protocol::build!(PingT { client_time_ms: 42 });
//! let ping = ClientMessageT::request(7, ClientBodyT::Ping(Box::new(ping)));
//! let bytes = codec.encode(&ping)?;
//! let back: ClientMessageT = codec.decode(&bytes)?;
//! assert_eq!(back, ping);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, VerifierOptions, WIPOffset};

use crate::error::ErrorCode;
use crate::frame;
use crate::tavern::{
    ClientBodyT, ClientMessage, ClientMessageT, CommandT, ServerBodyT, ServerMessage,
    ServerMessageT, ServiceBodyT, ServiceMessage, ServiceMessageT,
};

/// The protocol version this build speaks; sent in `Hello`, `JoinMatch` and `ServiceHello`.
/// Bumped only for a change old peers cannot ignore (appending fields or messages is not one).
pub const PROTOCOL_VERSION: u16 = 1;

/// The default largest envelope, encoded, in bytes (64 KiB).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How large and how complex an envelope may be. The defaults suit every Tavern link; a link
/// that needs larger frames should use [`Limits::with_max_frame_bytes`], which scales the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest encoded envelope accepted or produced, in bytes.
    pub max_frame_bytes: usize,
    /// The most tables the verifier may visit. Offsets may share a table, so a small message can
    /// reference one table thousands of times and unpack into a huge object; this stops that.
    pub max_tables: usize,
    /// The deepest table nesting. The schema is not recursive, so real messages stay far below.
    pub max_depth: usize,
    /// The most bytes the verifier may visit, counting shared data once per reference. It bounds
    /// the memory an unpacked message can take, whatever the sharing.
    pub max_apparent_bytes: usize,
}

impl Limits {
    /// Limits for frames of up to `max_frame_bytes`, with the table count and apparent size
    /// scaled to match (at most one table per 16 bytes, apparent size four times the frame).
    pub const fn with_max_frame_bytes(max_frame_bytes: usize) -> Self {
        let tables = max_frame_bytes / 16;
        Self {
            max_frame_bytes,
            max_tables: if tables < 64 { 64 } else { tables },
            max_depth: 16,
            max_apparent_bytes: max_frame_bytes.saturating_mul(4),
        }
    }

    fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: self.max_apparent_bytes,
            ignore_missing_null_terminator: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::with_max_frame_bytes(MAX_FRAME_BYTES)
    }
}

/// Why bytes could not be decoded into a message. Each maps to the [`ErrorCode`] to answer with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message or frame had no bytes at all.
    #[error("empty message")]
    Empty,
    /// The message, or the length a frame header declared, is over the limit.
    #[error("message of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The actual or declared length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The bytes are not a valid envelope (bad offsets, truncated, invalid UTF-8, a missing
    /// required field, or over the table, depth or apparent size limits).
    #[error("malformed message: {}", summarize(.0))]
    Malformed(#[from] InvalidFlatbuffer),
    /// A union that must hold a value (an envelope's body, a game command) holds none.
    #[error("no {union} value in the message")]
    MissingBody {
        /// The union, e.g. "ClientBody".
        union: &'static str,
    },
    /// A union holds a member type this build does not know, typically from a newer peer.
    #[error("unknown {union} member type {type_id}")]
    UnknownBody {
        /// The union, e.g. "ClientBody".
        union: &'static str,
        /// The union type discriminant that was sent.
        type_id: u8,
    },
    /// A stream ended in the middle of a frame.
    #[error("stream ended inside a frame: {buffered} bytes of {expected} buffered")]
    Truncated {
        /// Bytes of the frame (header included) received before the end.
        buffered: usize,
        /// Bytes the frame needed (header included); 0 when the header itself was cut.
        expected: usize,
    },
}

impl DecodeError {
    /// The stable code to answer the peer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::UnknownBody { .. } => ErrorCode::UnknownMessage,
            DecodeError::Empty
            | DecodeError::Malformed(_)
            | DecodeError::MissingBody { .. }
            | DecodeError::Truncated { .. } => ErrorCode::Malformed,
        }
    }
}

/// Why a message could not be encoded. These are bugs or limits on the sending side: the peer
/// would have rejected the bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message is over the frame limit.
    #[error("encoded message of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A union that must hold a value (an envelope's body, a game command) is `NONE`.
    #[error("no {union} value to encode")]
    MissingBody {
        /// The union, e.g. "ServerBody".
        union: &'static str,
    },
}

impl EncodeError {
    /// The stable code for logs and metrics (a sender does not usually tell its peer).
    pub fn code(&self) -> ErrorCode {
        match self {
            EncodeError::TooLarge { .. } => ErrorCode::TooLarge,
            EncodeError::MissingBody { .. } => ErrorCode::Internal,
        }
    }
}

/// One of the three envelopes: [`ClientMessageT`], [`ServerMessageT`], [`ServiceMessageT`].
/// Sealed; use it through [`Codec::decode`], [`Codec::encode`] and [`Codec::verify`].
pub trait Envelope: Sized + sealed::Sealed {
    /// The zero-copy reader of the envelope, e.g. `ClientMessage<'a>`.
    type Reader<'a>;
    /// The schema name of the envelope, for logs.
    const NAME: &'static str;

    #[doc(hidden)]
    fn verify_with<'a>(limits: &Limits, bytes: &'a [u8]) -> Result<Self::Reader<'a>, DecodeError>;
    #[doc(hidden)]
    fn unpack_reader(reader: &Self::Reader<'_>) -> Self;
    #[doc(hidden)]
    fn check_encodable(&self) -> Result<(), EncodeError>;
    #[doc(hidden)]
    fn pack_finished(&self, fbb: &mut FlatBufferBuilder<'_>);
}

/// Encodes and decodes envelopes within a set of [`Limits`]. Cheap to copy and share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Codec {
    limits: Limits,
}

impl Codec {
    /// A codec with these limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Verifies `bytes` as an envelope `M` and unpacks it into its owned form.
    pub fn decode<M: Envelope>(&self, bytes: &[u8]) -> Result<M, DecodeError> {
        let reader = M::verify_with(&self.limits, bytes)?;
        Ok(M::unpack_reader(&reader))
    }

    /// Verifies `bytes` as an envelope `M` and returns its zero-copy reader, for hot paths that
    /// only look at a field or two. It passed every check [`Codec::decode`] makes.
    pub fn verify<'a, M: Envelope>(&self, bytes: &'a [u8]) -> Result<M::Reader<'a>, DecodeError> {
        M::verify_with(&self.limits, bytes)
    }

    /// Decodes a message a client sent.
    pub fn decode_client(&self, bytes: &[u8]) -> Result<ClientMessageT, DecodeError> {
        self.decode(bytes)
    }

    /// Decodes a message a server sent to a client.
    pub fn decode_server(&self, bytes: &[u8]) -> Result<ServerMessageT, DecodeError> {
        self.decode(bytes)
    }

    /// Decodes a message from a service link.
    pub fn decode_service(&self, bytes: &[u8]) -> Result<ServiceMessageT, DecodeError> {
        self.decode(bytes)
    }

    /// Encodes an envelope, one message per WebSocket binary frame or ENet packet.
    pub fn encode<M: Envelope>(&self, message: &M) -> Result<Vec<u8>, EncodeError> {
        message.check_encodable()?;
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        message.pack_finished(&mut fbb);
        let data = fbb.finished_data();
        if data.len() > self.limits.max_frame_bytes {
            return Err(EncodeError::TooLarge {
                len: data.len(),
                max: self.limits.max_frame_bytes,
            });
        }
        Ok(data.to_vec())
    }

    /// Encodes an envelope with a length prefix, for stream links ([`crate::FrameDecoder`]).
    pub fn encode_framed<M: Envelope>(&self, message: &M) -> Result<Vec<u8>, EncodeError> {
        let payload = self.encode(message)?;
        let mut out = Vec::with_capacity(frame::FRAME_HEADER_BYTES + payload.len());
        frame::encode_frame(&payload, self.limits.max_frame_bytes, &mut out)?;
        Ok(out)
    }
}

/// Encodes without the size check, for messages whose size is bounded by construction.
pub(crate) fn encode_unchecked<M: Envelope>(message: &M) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    message.pack_finished(&mut fbb);
    fbb.finished_data().to_vec()
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::tavern::ClientMessageT {}
    impl Sealed for crate::tavern::ServerMessageT {}
    impl Sealed for crate::tavern::ServiceMessageT {}
}

/// The checks before the verifier: cheap, and they give the precise error for the common cases.
fn check_size(limits: &Limits, bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_frame_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_frame_bytes,
        });
    }
    Ok(())
}

/// A one-line, lowercase reason for a verifier error, fit for the peer and for log fields. The
/// verifier's own `Display` spans several lines with a field trace; it stays reachable as the
/// error's `source()` for logs that want it.
fn summarize(err: &InvalidFlatbuffer) -> String {
    match err {
        InvalidFlatbuffer::MissingRequiredField { required, .. } => {
            format!("missing required field `{required}`")
        }
        InvalidFlatbuffer::InconsistentUnion { field, .. } => {
            format!("union `{field}` has a type without a value or a value without a type")
        }
        InvalidFlatbuffer::Utf8Error { range, .. } => format!("string at {range:?} is not utf-8"),
        InvalidFlatbuffer::MissingNullTerminator { range, .. } => {
            format!("string at {range:?} lacks its null terminator")
        }
        InvalidFlatbuffer::Unaligned {
            position,
            unaligned_type,
            ..
        } => {
            format!("unaligned {unaligned_type} at {position}")
        }
        InvalidFlatbuffer::RangeOutOfBounds { range, .. } => {
            format!("range {range:?} is out of bounds")
        }
        InvalidFlatbuffer::SignedOffsetOutOfBounds {
            soffset, position, ..
        } => {
            format!("offset {soffset} at {position} is out of bounds")
        }
        InvalidFlatbuffer::TooManyTables => "too many tables".to_owned(),
        InvalidFlatbuffer::ApparentSizeTooLarge => "apparent size too large".to_owned(),
        InvalidFlatbuffer::DepthLimitReached => "tables nested too deep".to_owned(),
    }
}

/// Rejects a union discriminant that is `NONE` or unknown to this build. The generated `unpack`
/// would turn an unknown one into `NONE` silently; a message without its body means nothing.
fn check_union(union: &'static str, type_id: u8, known: bool) -> Result<(), DecodeError> {
    if type_id == 0 {
        Err(DecodeError::MissingBody { union })
    } else if !known {
        Err(DecodeError::UnknownBody { union, type_id })
    } else {
        Ok(())
    }
}

/// Implements [`Envelope`] for one envelope; `$extra` checks nested unions on the reader and
/// `$encodable` on the owned form.
macro_rules! envelope {
    (
        $owned:ident, $reader:ident, $body:ident, $body_owned:ident, $name:literal,
        extra = $extra:expr, encodable = $encodable:expr
    ) => {
        impl Envelope for $owned {
            type Reader<'a> = $reader<'a>;
            const NAME: &'static str = $name;

            fn verify_with<'a>(
                limits: &Limits,
                bytes: &'a [u8],
            ) -> Result<$reader<'a>, DecodeError> {
                check_size(limits, bytes)?;
                let reader =
                    flatbuffers::root_with_opts::<$reader<'a>>(&limits.verifier_options(), bytes)?;
                let ty = reader.body_type();
                check_union(stringify!($body), ty.0, ty.variant_name().is_some())?;
                let extra: fn(&$reader<'a>) -> Result<(), DecodeError> = $extra;
                extra(&reader)?;
                Ok(reader)
            }

            fn unpack_reader(reader: &$reader<'_>) -> Self {
                reader.unpack()
            }

            fn check_encodable(&self) -> Result<(), EncodeError> {
                if matches!(self.body, $body_owned::NONE) {
                    return Err(EncodeError::MissingBody {
                        union: stringify!($body),
                    });
                }
                let encodable: fn(&$owned) -> Result<(), EncodeError> = $encodable;
                encodable(self)
            }

            fn pack_finished(&self, fbb: &mut FlatBufferBuilder<'_>) {
                let root: WIPOffset<$reader<'_>> = self.pack(fbb);
                fbb.finish_minimal(root);
            }
        }
    };
}

envelope!(
    ClientMessageT,
    ClientMessage,
    ClientBody,
    ClientBodyT,
    "ClientMessage",
    extra = |m| match m.body_as_game_command() {
        // The rules engine takes the command union as is; an empty or unknown command is as
        // meaningless as an empty envelope.
        Some(cmd) => {
            let ty = cmd.command_type();
            check_union("Command", ty.0, ty.variant_name().is_some())
        }
        None => Ok(()),
    },
    encodable = |m| match &m.body {
        ClientBodyT::GameCommand(cmd) if matches!(cmd.command, CommandT::NONE) => {
            Err(EncodeError::MissingBody { union: "Command" })
        }
        _ => Ok(()),
    }
);

// Server and service messages carry no union that must be set below the body: an event a client
// does not know decodes as `GameEventBodyT::NONE` and is skipped, which keeps old clients working.
envelope!(
    ServerMessageT,
    ServerMessage,
    ServerBody,
    ServerBodyT,
    "ServerMessage",
    extra = |_| Ok(()),
    encodable = |_| Ok(())
);

envelope!(
    ServiceMessageT,
    ServiceMessage,
    ServiceBody,
    ServiceBodyT,
    "ServiceMessage",
    extra = |_| Ok(()),
    encodable = |_| Ok(())
);
