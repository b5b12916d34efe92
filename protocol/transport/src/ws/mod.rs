//! WebSocket links (tokio-tungstenite): a sharded server with optional TLS (rustls), and a
//! client for tests, the bench and tools. Each binary frame carries one envelope.
//!
//! # Design
//!
//! **No task per connection** (DESIGN §10). The server runs one accept task and a fixed number
//! of shard tasks (`WsConfig::shards`, by default one per core). The acceptor applies the caps
//! (total links, links per IP) and hands each accepted TCP stream to a shard, round-robin. A
//! shard owns a `FuturesUnordered` of per-connection futures and polls them all; a future is
//! woken on its own (by its socket, its timer or a send to its queue), so a shard only polls the
//! connections that have something to do. A connection future does the TLS and WebSocket
//! handshakes (under `handshake_timeout`), registers the link, reports
//! [`LinkEvent::Connected`](crate::LinkEvent::Connected), then runs the connection driver
//! (`driver.rs`): a hand-written future that, on each poll, writes what the socket accepts, reads
//! what has arrived, and arms one timer for pings, the idle timeout and the close deadline. Its
//! per-link state is the tungstenite stream with a small read buffer
//! (`WsConfig::read_buffer_bytes`), the outgoing queue and one boxed timer.
//!
//! **Sending** ([`LinkSink::send`](crate::LinkSink::send)) never blocks: it pushes onto the
//! link's queue under a per-link lock and wakes the driver. The queue is capped in bytes
//! (`max_queued_bytes_per_link`); the send that would pass the cap fails with
//! [`SendError::SlowConsumer`](crate::SendError::SlowConsumer), the queue is dropped and the link
//! is closed with [`CloseReason::SlowConsumer`]. Bytes already
//! handed to the kernel are not counted: a peer that does not read first fills its TCP window and
//! the socket buffer, then the queue.
//!
//! **Receiving** goes straight into the owner's bounded event channel. When it is full the
//! driver stops reading that socket, so the peer's TCP window closes rather than memory growing.
//! The owner must keep receiving until the channel ends: it ends when the server has stopped and
//! every link has reported [`LinkEvent::Disconnected`](crate::LinkEvent::Disconnected) (as long as
//! the owner holds no sender of its own).
//!
//! **Delivery.** WebSocket runs over TCP: [`Delivery::Unreliable`](crate::Delivery::Unreliable)
//! messages are sent like reliable ones (in order, never lost), and every received message is
//! reported as [`Delivery::Reliable`](crate::Delivery::Reliable).
//!
//! **Protocol rules.** Text frames, frames or messages over `max_frame_bytes`
//! (tungstenite's `max_frame_size` and `max_message_size`) and any WebSocket protocol violation
//! close the link with [`CloseReason::Protocol`] and a close frame
//! carrying `Malformed` (1001) or `TooLarge` (1002). A request for any path other than
//! `WsConfig::path` is answered with HTTP 404 during the handshake. A TCP connection that ends
//! without a close frame is reported as `Protocol("connection closed without a close frame")`.
//!
//! # Close codes
//!
//! A link is closed with a `u16` code: a `protocol::ErrorCode` number, or 0 for a normal close.
//! On the wire ([`close_code_and_reason`] / [`error_code_from_close`]):
//!
//! | our code | WebSocket close code | reason text |
//! |---|---|---|
//! | 0 | 1000 (normal) | empty |
//! | `ShuttingDown` (1012) | 1001 (going away) | `"1012 shutting_down"` |
//! | any other code `n` | 4000 (private range: application error) | `"n name"`, e.g. `"1013 slow_consumer"` |
//!
//! The receiving side reads the code back from the leading decimal number of the reason text,
//! whatever the close code; without one, standard close codes map to the nearest `ErrorCode`
//! (1000, 1001 and 1005 to 0; 1009 to `TooLarge`; 1002, 1003 and 1007 to `Malformed`; anything
//! else to `Internal`). A close received by a client with code 1001 is reported as
//! [`CloseReason::Shutdown`] (the server is going away); every
//! other received close is [`CloseReason::Remote`] with the decoded
//! code. Godot's `WebSocketPeer` exposes the close code and reason, so the addon decodes the same
//! way.
//!
//! # Shutdown
//!
//! When the server's cancellation token fires, the acceptor stops and every link is asked to
//! close: its queued messages are flushed, then a 1001 close frame is sent and the peer's reply
//! awaited for at most `close_timeout`, and [`LinkEvent::Disconnected`](crate::LinkEvent) with
//! [`CloseReason::Shutdown`] is reported. Handshakes in progress are
//! dropped. [`WsServer::wait`] resolves when every task has finished.

mod client;
mod driver;
mod io;
mod server;

use protocol::ErrorCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub use client::{WsClient, WsClientConfig, WsClientTrust};
pub use server::{WsConfig, WsServer, WsTls};

use crate::link::CloseReason;

/// The WebSocket close code for a normal close (our code 0).
pub const CLOSE_NORMAL: u16 = 1000;
/// The WebSocket close code for a server shutting down (our `ShuttingDown`).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The WebSocket close code for every other error; the reason text carries our code.
pub const CLOSE_APPLICATION_ERROR: u16 = 4000;

/// The WebSocket close code and reason text that carry `code` (see the module documentation).
pub fn close_code_and_reason(code: u16) -> (u16, String) {
    let name = ErrorCode::from_u16(code).map(ErrorCode::name);
    match code {
        0 => (CLOSE_NORMAL, String::new()),
        c if c == ErrorCode::ShuttingDown as u16 => (CLOSE_GOING_AWAY, format!("{c} shutting_down")),
        c => match name {
            Some(name) => (CLOSE_APPLICATION_ERROR, format!("{c} {name}")),
            None => (CLOSE_APPLICATION_ERROR, c.to_string()),
        },
    }
}

/// Our code from a received WebSocket close code and reason text (see the module
/// documentation). Never fails: anything unrecognised is `Internal`.
pub fn error_code_from_close(close_code: u16, reason: &str) -> u16 {
    let digits = reason.bytes().take_while(u8::is_ascii_digit).count();
    if let Some(code) = reason.get(..digits).and_then(|d| d.parse::<u16>().ok()) {
        return code;
    }
    match close_code {
        1000 | 1001 | 1005 => 0,
        1009 => ErrorCode::TooLarge as u16,
        1002 | 1003 | 1007 => ErrorCode::Malformed as u16,
        _ => ErrorCode::Internal as u16,
    }
}

/// The close frame that carries `code`.
pub(crate) fn close_frame(code: u16) -> CloseFrame {
    let (close_code, reason) = close_code_and_reason(code);
    CloseFrame { code: CloseCode::from(close_code), reason: reason.into() }
}

/// Why a link ended, from the close frame the peer sent (`None`: a close frame without a code).
pub(crate) fn reason_from_close(frame: Option<&CloseFrame>, is_client: bool) -> CloseReason {
    let (close_code, reason) = match frame {
        Some(f) => (u16::from(f.code), f.reason.as_str()),
        None => (1005, ""),
    };
    if is_client && close_code == CLOSE_GOING_AWAY {
        return CloseReason::Shutdown;
    }
    CloseReason::Remote { code: error_code_from_close(close_code, reason) }
}

/// The tungstenite settings every link uses: the frame limit on both the frame and the message
/// (so a fragmented message cannot add up past it) and small buffers for many idle links.
fn tungstenite_config(
    max_frame_bytes: usize,
    read_buffer_bytes: usize,
) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(read_buffer_bytes)
        // Frames are batched up to this size before a write; every batch is flushed anyway.
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

const WRITE_BUFFER_BYTES: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: u16, wire: (u16, &str)) {
        let (close_code, reason) = close_code_and_reason(code);
        assert_eq!((close_code, reason.as_str()), wire, "encoding {code}");
        assert_eq!(error_code_from_close(close_code, &reason), code, "decoding {wire:?}");
    }

    #[test]
    fn close_codes_round_trip() {
        check(0, (1000, ""));
        check(ErrorCode::ShuttingDown as u16, (1001, "1012 shutting_down"));
        check(ErrorCode::SlowConsumer as u16, (4000, "1013 slow_consumer"));
        check(ErrorCode::TokenExpired as u16, (4000, "2002 token_expired"));
        check(65000, (4000, "65000"));
        for &code in ErrorCode::ALL {
            let (close_code, reason) = close_code_and_reason(code as u16);
            assert!(close_code == 1001 || (4000..5000).contains(&close_code));
            assert_eq!(error_code_from_close(close_code, &reason), code as u16);
        }
    }

    #[test]
    fn foreign_close_frames_map_to_the_nearest_code() {
        assert_eq!(error_code_from_close(1001, ""), 0);
        assert_eq!(error_code_from_close(1005, ""), 0);
        assert_eq!(error_code_from_close(1009, "too big"), ErrorCode::TooLarge as u16);
        assert_eq!(error_code_from_close(1002, ""), ErrorCode::Malformed as u16);
        assert_eq!(error_code_from_close(4321, "no number"), ErrorCode::Internal as u16);
        // A number too large for u16 is not a code.
        assert_eq!(error_code_from_close(1000, "99999999"), 0);
        assert_eq!(reason_from_close(Some(&close_frame(0)), true), CloseReason::Remote { code: 0 });
        assert_eq!(reason_from_close(Some(&close_frame(1012)), true), CloseReason::Shutdown);
        assert_eq!(reason_from_close(Some(&close_frame(1012)), false), CloseReason::Remote { code: 1012 });
        assert_eq!(reason_from_close(None, false), CloseReason::Remote { code: 0 });
    }
}
