//! The ENet side of the pipe: an in-memory `Socket` that connects a rusty_enet host to the DTLS
//! sessions (or, in plaintext dev mode, straight to the UDP socket), and a bounds-checked reader of
//! ENet datagram headers that the server uses before ENet sees a datagram.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rusty_enet::{MTU_MAX, PacketReceived, Socket, SocketOptions};

/// The queues between one ENet host and the outside. One ENet datagram is one DTLS record on
/// both sides (what Godot's ENet-over-DTLS does), so nothing here splits or joins datagrams.
#[derive(Default)]
pub(crate) struct Bridge {
    /// Datagrams for ENet (already decrypted), with the address of their session.
    pub(crate) inbound: VecDeque<(SocketAddr, BytesMut)>,
    /// Datagrams ENet produced, for the caller to encrypt and send.
    pub(crate) outbound: Vec<(SocketAddr, Bytes)>,
}

impl Socket for Bridge {
    type Address = SocketAddr;
    type Error = io::Error;

    fn init(&mut self, _options: SocketOptions) -> Result<(), io::Error> {
        Ok(())
    }

    fn send(&mut self, address: SocketAddr, buffer: &[u8]) -> Result<usize, io::Error> {
        self.outbound.push((address, Bytes::copy_from_slice(buffer)));
        Ok(buffer.len())
    }

    fn receive(&mut self, buffer: &mut [u8; MTU_MAX]) -> Result<Option<(SocketAddr, PacketReceived)>, io::Error> {
        while let Some((address, datagram)) = self.inbound.pop_front() {
            // ENet never sends more than MTU_MAX; anything longer is not ENet.
            if let Some(slot) = buffer.get_mut(..datagram.len()) {
                slot.copy_from_slice(&datagram);
                return Ok(Some((address, PacketReceived::Complete(datagram.len()))));
            }
        }
        Ok(None)
    }
}

/// A monotonic clock for ENet hosts (rusty_enet's default reads the wall clock and panics if it
/// goes backwards). It starts at one second because ENet treats a time of 0 as "never".
pub(crate) fn enet_clock() -> Box<dyn Fn() -> Duration> {
    let start = Instant::now();
    Box::new(move || Duration::from_secs(1) + start.elapsed())
}

/// ENet protocol constants (ENet 1.3 `protocol.h`).
mod proto {
    pub(super) const MAXIMUM_PEER_ID: u16 = 0x0FFF;
    pub(super) const HEADER_FLAG_SENT_TIME: u16 = 1 << 15;
    pub(super) const HEADER_FLAG_COMPRESSED: u16 = 1 << 14;
    pub(super) const HEADER_SESSION_AND_FLAGS: u16 = 0xF000;
    pub(super) const COMMAND_MASK: u8 = 0x0F;

    pub(super) const CONNECT: u8 = 2;
    pub(super) const DISCONNECT: u8 = 4;
    pub(super) const SEND_RELIABLE: u8 = 6;
    pub(super) const SEND_UNRELIABLE: u8 = 7;
    pub(super) const SEND_FRAGMENT: u8 = 8;
    pub(super) const SEND_UNSEQUENCED: u8 = 9;
    pub(super) const SEND_UNRELIABLE_FRAGMENT: u8 = 12;

    /// Bytes of each command's fixed part, header included, by command number (0 = invalid).
    pub(super) const COMMAND_SIZES: [usize; 13] = [0, 8, 48, 44, 8, 4, 6, 8, 24, 8, 12, 16, 24];
}

/// What the server needs to know about an ENet datagram before ENet processes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The connect id of a CONNECT command in the datagram.
    pub(crate) connect_id: Option<u32>,
    /// The data of a DISCONNECT command: the peer is closing with this code.
    pub(crate) disconnect: Option<u32>,
    /// The size of a message the datagram starts or carries that is over the frame limit.
    pub(crate) oversize: Option<usize>,
}

/// Reads the commands of one ENet datagram the way ENet will, bounds-checked, stopping where ENet
/// would stop. Only what the server polices is reported; ENet validates the rest itself.
pub(crate) fn scan(datagram: &[u8], max_message: usize) -> Scan {
    let mut scan = Scan::default();
    let Some(&[hi, lo]) = datagram.get(..2) else {
        return scan;
    };
    let peer_field = u16::from_be_bytes([hi, lo]);
    if peer_field & proto::HEADER_FLAG_COMPRESSED != 0 {
        // There is no compressor on either side; ENet drops the datagram.
        return scan;
    }
    let mut at = if peer_field & proto::HEADER_FLAG_SENT_TIME != 0 { 4 } else { 2 };
    while let Some(header) = datagram.get(at..at + 4) {
        let number = header.first().map_or(0, |c| c & proto::COMMAND_MASK);
        let Some(&size) = proto::COMMAND_SIZES.get(usize::from(number)) else {
            break;
        };
        let Some(command) = datagram.get(at..at + size).filter(|_| size > 0) else {
            break;
        };
        let u16_at = |i: usize| command.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let u32_at = |i: usize| command.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let data_length = match number {
            proto::CONNECT => {
                scan.connect_id = u32_at(40);
                0
            }
            proto::DISCONNECT => {
                scan.disconnect = u32_at(4);
                0
            }
            proto::SEND_RELIABLE => u16_at(4).unwrap_or(0),
            proto::SEND_UNRELIABLE | proto::SEND_UNSEQUENCED => u16_at(6).unwrap_or(0),
            proto::SEND_FRAGMENT | proto::SEND_UNRELIABLE_FRAGMENT => {
                let total = u32_at(16).map_or(0, |t| t as usize);
                if total > max_message {
                    scan.oversize = Some(total);
                }
                u16_at(6).unwrap_or(0)
            }
            _ => 0,
        };
        if matches!(number, proto::SEND_RELIABLE | proto::SEND_UNRELIABLE | proto::SEND_UNSEQUENCED)
            && data_length > max_message
        {
            scan.oversize = Some(data_length);
        }
        at += size + data_length;
    }
    scan
}

/// True when `datagram` is an ENet CONNECT from a new peer: the only first datagram that may
/// create state for an unknown address in plaintext dev mode.
pub(crate) fn is_enet_connect(datagram: &[u8]) -> bool {
    let Some(&[hi, lo]) = datagram.get(..2) else {
        return false;
    };
    let peer_field = u16::from_be_bytes([hi, lo]);
    if peer_field & !proto::HEADER_SESSION_AND_FLAGS != proto::MAXIMUM_PEER_ID {
        return false;
    }
    scan(datagram, usize::MAX).connect_id.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sent_time: bool) -> Vec<u8> {
        let mut d = vec![0x00, 0x01];
        if sent_time {
            d[0] |= 0x80;
            d.extend_from_slice(&[0, 0]);
        }
        d
    }

    #[test]
    fn scan_reports_connect_disconnect_and_oversize() {
        let mut connect = vec![0x8F, 0xFF, 0, 0];
        let mut cmd = vec![0u8; 48];
        cmd[0] = 0x82;
        cmd[40..44].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
        connect.extend_from_slice(&cmd);
        assert_eq!(scan(&connect, 1000).connect_id, Some(0xDEAD_BEEF));
        assert!(is_enet_connect(&connect));
        assert!(!is_enet_connect(&connect[..20]));

        let mut disconnect = header(true);
        let mut cmd = vec![0x84, 0, 0, 1];
        cmd.extend_from_slice(&1013u32.to_be_bytes());
        disconnect.extend_from_slice(&cmd);
        assert_eq!(scan(&disconnect, 1000).disconnect, Some(1013));
        assert!(!is_enet_connect(&disconnect));

        // A reliable send of 10 bytes, then a fragment announcing a 5000-byte message.
        let mut sends = header(false);
        sends.extend_from_slice(&[0x86, 0, 0, 1, 0, 10]);
        sends.extend_from_slice(&[7u8; 10]);
        let mut frag = vec![0u8; 24];
        frag[0] = 0x88;
        frag[6..8].copy_from_slice(&4u16.to_be_bytes());
        frag[16..20].copy_from_slice(&5000u32.to_be_bytes());
        sends.extend_from_slice(&frag);
        sends.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(scan(&sends, 4999).oversize, Some(5000));
        assert_eq!(scan(&sends, 5000).oversize, None);
        assert_eq!(scan(&sends, 9).oversize, Some(5000));
    }

    #[test]
    fn scan_never_reads_out_of_bounds() {
        let mut rng = 0x1234_5678u32;
        for len in 0..200 {
            let d: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 17;
                    rng ^= rng << 5;
                    rng as u8
                })
                .collect();
            let _ = scan(&d, 100);
            let _ = is_enet_connect(&d);
        }
    }
}
