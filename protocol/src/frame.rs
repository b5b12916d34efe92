//! Length-prefixed framing for stream links (the TCP service links): each frame is a 4-byte
//! big-endian payload length followed by the payload, the layout of `tokio_util`'s default
//! `LengthDelimitedCodec`. Sans-IO: the driver feeds the bytes it read and sends what it gets.
//!
//! Message transports (WebSocket binary frames, ENet packets) already delimit messages and carry
//! one envelope each without this framing.
//!
//! ```
//! use protocol::{FrameDecoder, encode_frame, MAX_FRAME_BYTES};
//!
//! let mut wire = Vec::new();
//! encode_frame(b"first", MAX_FRAME_BYTES, &mut wire)?;
//! encode_frame(b"second", MAX_FRAME_BYTES, &mut wire)?;
//!
//! let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
//! let mut frames = Vec::new();
//! // Bytes arrive in arbitrary pieces; the decoder keeps what it needs between reads.
//! for piece in wire.chunks(3) {
//!     let mut input = piece;
//!     while let Some(frame) = decoder.decode(&mut input)? {
//!         frames.push(frame);
//!     }
//! }
//! assert_eq!(frames, vec![b"first".to_vec(), b"second".to_vec()]);
//! decoder.finish()?; // the stream ended between frames
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::codec::{DecodeError, EncodeError, MAX_FRAME_BYTES};

/// Bytes of the length prefix before every frame's payload.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Appends one frame (length prefix and payload) to `out`. Fails, appending nothing, when the
/// payload is over `max_frame_bytes`, since the peer's decoder would reject it.
pub fn encode_frame(
    payload: &[u8],
    max_frame_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let too_large = || EncodeError::TooLarge {
        len: payload.len(),
        max: max_frame_bytes,
    };
    if payload.len() > max_frame_bytes {
        return Err(too_large());
    }
    let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reassembles frames from a byte stream cut at arbitrary points.
///
/// It buffers at most one partial frame, and rejects a header that declares a payload over the
/// limit as soon as the header is complete, before any of that payload is read. After an error
/// the stream cannot be resynchronised: every later call returns the same error, and the driver
/// should answer with the error's code and close the link.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// The payload length of the frame being read, once its header is complete.
    expected: Option<usize>,
    payload: Vec<u8>,
    /// Set by the first error, which is final.
    failed: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder that accepts payloads of up to `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            expected: None,
            payload: Vec::new(),
            failed: None,
        }
    }

    /// Consumes bytes from the front of `input` until one frame is complete, and returns it;
    /// returns `Ok(None)` once `input` is used up without completing a frame. Call it in a loop
    /// until it returns `None` (then `input` is empty). A frame may be empty.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        loop {
            match self.expected {
                None => {
                    let need = FRAME_HEADER_BYTES - self.header_len;
                    let (head, rest) = input.split_at(need.min(input.len()));
                    let end = self.header_len + head.len();
                    if let Some(slot) = self.header.get_mut(self.header_len..end) {
                        slot.copy_from_slice(head);
                    }
                    self.header_len = end;
                    *input = rest;
                    if self.header_len < FRAME_HEADER_BYTES {
                        return Ok(None);
                    }
                    let len = u32::from_be_bytes(self.header) as usize;
                    if len > self.max_frame_bytes {
                        let err = DecodeError::TooLarge {
                            len,
                            max: self.max_frame_bytes,
                        };
                        self.failed = Some(err.clone());
                        return Err(err);
                    }
                    self.expected = Some(len);
                }
                Some(len) => {
                    let need = len.saturating_sub(self.payload.len());
                    let (head, rest) = input.split_at(need.min(input.len()));
                    *input = rest;
                    let frame = if self.payload.is_empty() && head.len() == len {
                        // The whole payload is in this read: copy it once, skip the buffer.
                        head.to_vec()
                    } else {
                        self.payload.extend_from_slice(head);
                        if self.payload.len() < len {
                            return Ok(None);
                        }
                        std::mem::take(&mut self.payload)
                    };
                    self.header_len = 0;
                    self.expected = None;
                    return Ok(Some(frame));
                }
            }
        }
    }

    /// True when no partial frame is buffered, so the stream may end here cleanly.
    pub fn is_idle(&self) -> bool {
        self.failed.is_none() && self.header_len == 0
    }

    /// Bytes of the current partial frame held, header included.
    pub fn buffered_bytes(&self) -> usize {
        self.header_len + self.payload.len()
    }

    /// Call when the stream ends: fails with [`DecodeError::Truncated`] if it ended inside a
    /// frame, or with the earlier error if the decoder had failed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.header_len == 0 {
            return Ok(());
        }
        Err(DecodeError::Truncated {
            buffered: self.buffered_bytes(),
            expected: self.expected.map_or(0, |len| FRAME_HEADER_BYTES + len),
        })
    }
}

impl Default for FrameDecoder {
    /// A decoder with the default limit, [`MAX_FRAME_BYTES`].
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}
