//! The stateless HelloVerifyRequest front of the ENet/DTLS server (RFC 6347 §4.2.1): a ClientHello
//! without a cookie is answered with a HelloVerifyRequest and forgotten; only a ClientHello that
//! echoes a cookie this server gave the same address, for the same hello parameters, within the
//! secret's lifetime may create a DTLS session. A spoofed source never receives its cookie, so it
//! creates no state at all.
//!
//! Cookie = the first 20 bytes of HMAC-SHA256(secret, label ‖ remote ip:port ‖ client_version ‖
//! random ‖ cipher_suites ‖ compression_methods): the address, and parameters RFC 6347 requires
//! the client to repeat unchanged in its second ClientHello. The session_id, which must stay too,
//! is left out to be lenient (mbedTLS 3 makes one up when it presents a session ticket): binding
//! it would protect nothing, since rtc-dtls is given the second ClientHello itself. The secret is
//! random, is replaced every rotation period, and the previous one is still accepted, so a cookie
//! is honoured for at least one and at most two periods after it was issued.
//!
//! Plain code over byte slices and an injected clock. Every read of the datagram is
//! bounds-checked; no input makes anything here panic (a proptest feeds it garbage).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_crypto::{HmacAlgorithm, Mac, RTCCryptoProvider};

use crate::dtls::COOKIE_LEN;

/// DTLS record header: type(1) version(2) epoch(2) sequence_number(6) length(2).
const RECORD_HEADER: usize = 13;
/// DTLS handshake header: msg_type(1) length(3) message_seq(2) fragment_offset(3)
/// fragment_length(3).
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const HELLO_VERIFY_REQUEST: u8 = 3;
/// RFC 6347 §4.2.1: a DTLS 1.2 server SHOULD put DTLS 1.0 in the HelloVerifyRequest whatever
/// version it goes on to negotiate. rtc-dtls and mbedTLS (2.28 and 3.x) clients accept 1.0 or 1.2.
const DTLS_1_0: [u8; 2] = [0xfe, 0xff];
/// Bytes of the client's random, after its 2-byte version.
const RANDOM: usize = 32;
/// The longest session id TLS allows.
const MAX_SESSION_ID: usize = 32;
/// Separates these MACs from anything else the secret might ever key.
const LABEL: &[u8] = b"tavern dtls hello cookie v1";
/// Bytes of a fresh secret.
const SECRET_LEN: usize = 32;

/// What the front made of a datagram that looked like a ClientHello.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Not an unfragmented epoch-0 ClientHello the front can use (malformed, fragmented, or
    /// carrying a cookie but not numbered as a second ClientHello): drop it.
    Unusable,
    /// No cookie: send this HelloVerifyRequest back and keep nothing.
    Challenge(BytesMut),
    /// A cookie this server did not give this address for these parameters, or one whose secret
    /// has rotated out: drop it.
    Refused,
    /// The cookie is ours. `first_hello` is the client's ClientHello as it was before the cookie
    /// exchange (cookie removed, message_seq 0), for rtc-dtls to run its own exchange on.
    Verified { cookie: [u8; COOKIE_LEN], first_hello: BytesMut },
}

/// The cookie secrets and the checks made with them.
pub(crate) struct CookieFront {
    provider: Arc<dyn RTCCryptoProvider>,
    rotation: Duration,
    current: Box<dyn Mac>,
    /// The secret before `current`, still honoured so that a cookie issued just before a rotation
    /// works; `None` after a start or after a pause longer than two periods.
    previous: Option<Box<dyn Mac>>,
    /// When `current` took over.
    rotated_at: Instant,
}

impl CookieFront {
    /// A front with a fresh random secret, replaced every `rotation`.
    pub(crate) fn new(provider: Arc<dyn RTCCryptoProvider>, rotation: Duration, now: Instant) -> Result<Self, String> {
        let current = fresh_secret(provider.as_ref())?;
        Ok(CookieFront { provider, rotation, current, previous: None, rotated_at: now })
    }

    /// Replaces the secret once its period is over. Called before every check, so the schedule
    /// holds however rarely it runs: a secret is current for one period and previous for the next.
    pub(crate) fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.rotated_at);
        if age < self.rotation {
            return;
        }
        let fresh = match fresh_secret(self.provider.as_ref()) {
            Ok(mac) => mac,
            Err(e) => {
                // Keep the old secrets (cookies stay valid a little longer) and retry next time.
                tracing::error!(error = %e, "cannot draw a new dtls cookie secret");
                return;
            }
        };
        let old = std::mem::replace(&mut self.current, fresh);
        if age < self.rotation.saturating_mul(2) {
            self.previous = Some(old);
            self.rotated_at += self.rotation;
        } else {
            self.previous = None;
            self.rotated_at = now;
        }
    }

    /// Judges a datagram from `from` that no DTLS session will take: see [`Verdict`].
    pub(crate) fn check(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Verdict {
        self.rotate(now);
        let Some(hello) = ClientHello::parse(datagram) else {
            return Verdict::Unusable;
        };
        if hello.cookie.is_empty() {
            return match cookie(self.current.as_mut(), from, &hello) {
                Some(cookie) => Verdict::Challenge(hello.hello_verify_request(&cookie)),
                None => Verdict::Unusable,
            };
        }
        // The client answers a HelloVerifyRequest with message_seq 1 (RFC 6347 §4.2.2), and
        // rtc-dtls takes nothing else as the second ClientHello.
        if hello.message_seq != 1 {
            return Verdict::Unusable;
        }
        let Ok(echoed) = <[u8; COOKIE_LEN]>::try_from(hello.cookie) else {
            return Verdict::Refused;
        };
        let ours = |mac: &mut dyn Mac| cookie(mac, from, &hello).is_some_and(|c| rtc_crypto::constant_time_eq(&c, &echoed));
        let valid = ours(self.current.as_mut()) || self.previous.as_mut().is_some_and(|mac| ours(mac.as_mut()));
        if valid {
            Verdict::Verified { cookie: echoed, first_hello: hello.first_hello() }
        } else {
            Verdict::Refused
        }
    }
}

fn fresh_secret(provider: &dyn RTCCryptoProvider) -> Result<Box<dyn Mac>, String> {
    let mut secret = [0u8; SECRET_LEN];
    provider.random().fill(&mut secret).map_err(|e| format!("random secret: {e}"))?;
    provider
        .crypto()
        .new_hmac(HmacAlgorithm::Sha256, &secret)
        .map_err(|e| format!("hmac-sha256: {e}"))
}

/// The cookie for `hello` from `from` under `mac`'s secret; `None` only if the provider fails.
fn cookie(mac: &mut dyn Mac, from: SocketAddr, hello: &ClientHello<'_>) -> Option<[u8; COOKIE_LEN]> {
    let mut address = [0u8; 1 + 16 + 2];
    let used = match from {
        SocketAddr::V4(v4) => {
            address[0] = 4;
            address[1..5].copy_from_slice(&v4.ip().octets());
            address[5..7].copy_from_slice(&v4.port().to_be_bytes());
            7
        }
        SocketAddr::V6(v6) => {
            address[0] = 6;
            address[1..17].copy_from_slice(&v6.ip().octets());
            address[17..19].copy_from_slice(&v6.port().to_be_bytes());
            19
        }
    };
    let mut tag = vec![0u8; mac.output_len()];
    let version_and_random = hello.before_cookie.get(..2 + RANDOM)?;
    mac.sign(&[LABEL, &address[..used], version_and_random, hello.parameters_after_cookie], &mut tag).ok()?;
    tag.get(..COOKIE_LEN)?.try_into().ok()
}

/// An unfragmented epoch-0 ClientHello that is the first record of a datagram, located field by
/// field. Only what the front needs is picked out; rtc-dtls validates the rest.
#[derive(Debug)]
pub(crate) struct ClientHello<'a> {
    /// Content type and record version, copied into what the front writes back.
    record_version: [u8; 2],
    record_seq: u64,
    message_seq: u16,
    /// client_version, random and session_id (with its length byte).
    before_cookie: &'a [u8],
    cookie: &'a [u8],
    /// cipher_suites and compression_methods with their length prefixes: the rest of the
    /// parameters the client must repeat unchanged.
    parameters_after_cookie: &'a [u8],
    /// Everything after the cookie: the parameters above, then the extensions, if any.
    after_cookie: &'a [u8],
}

impl<'a> ClientHello<'a> {
    /// Reads the first record of `datagram`; `None` unless it is an epoch-0 handshake record
    /// holding exactly one unfragmented ClientHello whose fields up to the compression methods
    /// fit their declared lengths.
    pub(crate) fn parse(datagram: &'a [u8]) -> Option<Self> {
        let header = datagram.get(..RECORD_HEADER)?;
        let &[CONTENT_HANDSHAKE, 0xfe, minor, 0, 0, s0, s1, s2, s3, s4, s5, l0, l1] = header else {
            return None;
        };
        if minor != 0xff && minor != 0xfd {
            return None;
        }
        let record_len = usize::from(u16::from_be_bytes([l0, l1]));
        let record = datagram.get(RECORD_HEADER..RECORD_HEADER + record_len)?;
        let handshake = record.get(..HANDSHAKE_HEADER)?;
        let &[CLIENT_HELLO, n0, n1, n2, q0, q1, o0, o1, o2, f0, f1, f2] = handshake else {
            return None;
        };
        let length = u24(n0, n1, n2);
        // Unfragmented (mbedTLS and rtc-dtls never fragment a ClientHello), and alone in its
        // record, so that the rewrite below covers the whole record.
        if u24(o0, o1, o2) != 0 || u24(f0, f1, f2) != length || record.len() != HANDSHAKE_HEADER + length {
            return None;
        }
        let body = record.get(HANDSHAKE_HEADER..)?;
        let session_id_at = 2 + RANDOM;
        let session_id_len = usize::from(*body.get(session_id_at)?);
        if session_id_len > MAX_SESSION_ID {
            return None;
        }
        let cookie_at = session_id_at + 1 + session_id_len;
        let cookie_len = usize::from(*body.get(cookie_at)?);
        let cookie = body.get(cookie_at + 1..cookie_at + 1 + cookie_len)?;
        let suites_at = cookie_at + 1 + cookie_len;
        let &[h, l] = body.get(suites_at..suites_at + 2)? else {
            return None;
        };
        let suites_len = usize::from(u16::from_be_bytes([h, l]));
        if suites_len < 2 || suites_len % 2 != 0 {
            return None;
        }
        let compression_at = suites_at + 2 + suites_len;
        let compression_len = usize::from(*body.get(compression_at)?);
        if compression_len == 0 {
            return None;
        }
        let parameters_end = compression_at + 1 + compression_len;
        Some(ClientHello {
            record_version: [0xfe, minor],
            record_seq: u64::from_be_bytes([0, 0, s0, s1, s2, s3, s4, s5]),
            message_seq: u16::from_be_bytes([q0, q1]),
            before_cookie: body.get(..cookie_at)?,
            cookie,
            parameters_after_cookie: body.get(suites_at..parameters_end)?,
            after_cookie: body.get(suites_at..)?,
        })
    }

    /// The HelloVerifyRequest answering this ClientHello, in one record: the record version and
    /// the handshake message_seq copied from the ClientHello (as mbedTLS's own stateless server
    /// does), server_version DTLS 1.0, record sequence number 0.
    ///
    /// RFC 6347 §4.2.1 asks for the ClientHello's record sequence number, which is 0 for a
    /// client's first record, so the two agree unless the client retransmitted its first
    /// ClientHello (a HelloVerifyRequest was lost). They differ then on purpose: rtc-dtls numbers
    /// the server flight that follows from 1, as if it had sent the HelloVerifyRequest as record
    /// 0, and a HelloVerifyRequest numbered 1..=4 would make the client's replay window drop one
    /// of those records, stalling the handshake for a retransmission round. A second
    /// HelloVerifyRequest numbered 0 can only be dropped as a replay by a client that already
    /// received the first, and so needs neither.
    pub(crate) fn hello_verify_request(&self, cookie: &[u8; COOKIE_LEN]) -> BytesMut {
        let body_len = 2 + 1 + COOKIE_LEN;
        let mut out = BytesMut::with_capacity(RECORD_HEADER + HANDSHAKE_HEADER + body_len);
        self.put_record_header(&mut out, 0, HANDSHAKE_HEADER + body_len);
        put_handshake_header(&mut out, HELLO_VERIFY_REQUEST, self.message_seq, body_len);
        out.extend_from_slice(&DTLS_1_0);
        out.extend_from_slice(&[COOKIE_LEN as u8]);
        out.extend_from_slice(cookie);
        out
    }

    /// This ClientHello as the client sent it before the cookie exchange: the same record without
    /// the cookie, lengths recomputed, message_seq 0. Its record sequence number is 0, or 1 when
    /// the real ClientHello itself has 0, so that rtc-dtls's replay window (which sees this one
    /// first) never mistakes the real one for a replay.
    pub(crate) fn first_hello(&self) -> BytesMut {
        let body_len = self.before_cookie.len() + 1 + self.after_cookie.len();
        let mut out = BytesMut::with_capacity(RECORD_HEADER + HANDSHAKE_HEADER + body_len);
        let record_seq = if self.record_seq == 0 { 1 } else { 0 };
        self.put_record_header(&mut out, record_seq, HANDSHAKE_HEADER + body_len);
        put_handshake_header(&mut out, CLIENT_HELLO, 0, body_len);
        out.extend_from_slice(self.before_cookie);
        out.extend_from_slice(&[0]);
        out.extend_from_slice(self.after_cookie);
        out
    }

    /// Epoch 0, this ClientHello's record version. The caller keeps `len` within u16: a
    /// ClientHello record is at most 65535 bytes, and both rewrites only shrink it or (the
    /// HelloVerifyRequest) are a few dozen bytes.
    fn put_record_header(&self, out: &mut BytesMut, seq: u64, len: usize) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE]);
        out.extend_from_slice(&self.record_version);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&seq.to_be_bytes()[2..]);
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    }
}

/// An unfragmented handshake message header: `len` fits 24 bits, being at most a record's length.
fn put_handshake_header(out: &mut BytesMut, msg_type: u8, message_seq: u16, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&[msg_type]);
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&message_seq.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&len[1..]);
}

fn u24(a: u8, b: u8, c: u8) -> usize {
    usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{ServerIdentity, provider};
    use crate::dtls::{self, DtlsEvent, DtlsSession, Verify};
    use proptest::prelude::*;

    const PERIOD: Duration = Duration::from_secs(60);

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn front(now: Instant) -> CookieFront {
        CookieFront::new(provider().expect("provider"), PERIOD, now).expect("front")
    }

    /// A first ClientHello of an rtc-dtls client (no cookie), made once for the proptests.
    fn sample_hello() -> &'static [u8] {
        static HELLO: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        HELLO.get_or_init(|| {
            let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
            let (_client, hello) =
                rust_client_hello(addr("127.0.0.1:40115"), addr("127.0.0.1:40116"), identity.cert_sha256(), Instant::now());
            hello.to_vec()
        })
    }

    /// The first ClientHello of an rtc-dtls client (no cookie), and the client.
    fn rust_client_hello(client: SocketAddr, server: SocketAddr, pin: [u8; 32], now: Instant) -> (DtlsSession, BytesMut) {
        let config = dtls::client_config(Verify::Pin(pin), server).expect("client config");
        let mut session = DtlsSession::connect(now, client, server, &config).expect("connect");
        let hello = session.poll_datagram().expect("client hello");
        (session, hello)
    }

    /// `hello` with `cookie` put in, numbered as the second ClientHello (what a client sends
    /// after a HelloVerifyRequest).
    fn with_cookie(hello: &[u8], cookie: &[u8]) -> Vec<u8> {
        let parsed = ClientHello::parse(hello).expect("a client hello");
        let body_len = parsed.before_cookie.len() + 1 + cookie.len() + parsed.after_cookie.len();
        let mut out = BytesMut::new();
        parsed.put_record_header(&mut out, parsed.record_seq + 1, HANDSHAKE_HEADER + body_len);
        put_handshake_header(&mut out, CLIENT_HELLO, 1, body_len);
        out.extend_from_slice(parsed.before_cookie);
        out.extend_from_slice(&[cookie.len() as u8]);
        out.extend_from_slice(cookie);
        out.extend_from_slice(parsed.after_cookie);
        out.to_vec()
    }

    fn challenge(verdict: Verdict) -> BytesMut {
        match verdict {
            Verdict::Challenge(hvr) => hvr,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// The cookie inside a HelloVerifyRequest the front wrote.
    fn cookie_of(hvr: &[u8]) -> [u8; COOKIE_LEN] {
        hvr.get(RECORD_HEADER + HANDSHAKE_HEADER + 3..).and_then(|c| c.try_into().ok()).expect("a 20-byte cookie")
    }

    #[test]
    fn a_cookieless_hello_is_answered_with_a_hello_verify_request_in_rfc_form() {
        let now = Instant::now();
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let (c, s) = (addr("127.0.0.1:40101"), addr("127.0.0.1:40102"));
        let (_client, hello) = rust_client_hello(c, s, identity.cert_sha256(), now);
        let parsed = ClientHello::parse(&hello).expect("parses");
        assert!(parsed.cookie.is_empty());
        assert_eq!(parsed.message_seq, 0);
        let hvr = challenge(front(now).check(now, c, &hello));
        assert_eq!(hvr.len(), RECORD_HEADER + HANDSHAKE_HEADER + 3 + COOKIE_LEN);
        // Record: handshake, the ClientHello's version, epoch 0, sequence number 0 (the
        // ClientHello's, for a first ClientHello), length.
        assert_eq!(hvr[..3], hello[..3]);
        assert_eq!(hello[3..11], [0; 8], "a client's first record");
        assert_eq!(hvr[3..11], [0; 8]);
        assert_eq!(hvr[11..13], [0, 35]);
        // Handshake: hello_verify_request, 23 bytes, the ClientHello's message_seq, unfragmented.
        assert_eq!(hvr[13..25], [3, 0, 0, 23, hello[17], hello[18], 0, 0, 0, 0, 0, 23]);
        assert_eq!(hvr[25..28], [0xfe, 0xff, 20]);
    }

    #[test]
    fn the_cookie_depends_on_address_parameters_and_secret_and_verifies_only_for_them() {
        let now = Instant::now();
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let (c, s) = (addr("127.0.0.1:40103"), addr("127.0.0.1:40104"));
        let (_client, hello) = rust_client_hello(c, s, identity.cert_sha256(), now);
        let mut f = front(now);
        let cookie = cookie_of(&challenge(f.check(now, c, &hello)));
        assert_eq!(cookie, cookie_of(&challenge(f.check(now, c, &hello))), "deterministic");
        for other in [addr("127.0.0.1:40105"), addr("127.0.0.2:40103"), addr("[::1]:40103")] {
            assert_ne!(cookie, cookie_of(&challenge(f.check(now, other, &hello))), "{other}");
        }
        // Another random (byte 13 + 12 + 2 is the random's first byte) gives another cookie.
        let mut other_random = hello.to_vec();
        other_random[RECORD_HEADER + HANDSHAKE_HEADER + 2] ^= 1;
        assert_ne!(cookie, cookie_of(&challenge(f.check(now, c, &other_random))));
        // Another server (secret) gives another cookie.
        assert_ne!(cookie, cookie_of(&challenge(front(now).check(now, c, &hello))));

        let second = with_cookie(&hello, &cookie);
        match f.check(now, c, &second) {
            Verdict::Verified { cookie: got, first_hello } => {
                assert_eq!(got, cookie);
                assert_eq!(&first_hello[..], &hello[..], "the rewrite restores the first ClientHello exactly");
            }
            other => panic!("expected verified, got {other:?}"),
        }
        assert!(matches!(f.check(now, addr("127.0.0.1:40106"), &second), Verdict::Refused));
        let mut forged = cookie;
        forged[19] ^= 0x80;
        assert!(matches!(f.check(now, c, &with_cookie(&hello, &forged)), Verdict::Refused));
        assert!(matches!(f.check(now, c, &with_cookie(&hello, &cookie[..19])), Verdict::Refused));
        assert!(matches!(f.check(now, c, &with_cookie(&hello, &[cookie.as_slice(), &[0]].concat())), Verdict::Refused));
        // A changed parameter (the random) breaks the cookie.
        let mut changed = second.clone();
        changed[RECORD_HEADER + HANDSHAKE_HEADER + 2] ^= 1;
        assert!(matches!(f.check(now, c, &changed), Verdict::Refused));
        // A cookie on a ClientHello numbered 0 is not a second ClientHello.
        let mut seq0 = second.clone();
        seq0[RECORD_HEADER + 5] = 0;
        assert!(matches!(f.check(now, c, &seq0), Verdict::Unusable));
    }

    #[test]
    fn a_cookie_lives_one_to_two_rotation_periods() {
        let start = Instant::now();
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let (c, s) = (addr("127.0.0.1:40107"), addr("127.0.0.1:40108"));
        let (_client, hello) = rust_client_hello(c, s, identity.cert_sha256(), start);
        let check = |issued: Duration, used: Duration| {
            let mut f = front(start);
            let cookie = cookie_of(&challenge(f.check(start + issued, c, &hello)));
            matches!(f.check(start + used, c, &with_cookie(&hello, &cookie)), Verdict::Verified { .. })
        };
        let p = PERIOD;
        assert!(check(Duration::ZERO, Duration::ZERO));
        assert!(check(Duration::ZERO, p - Duration::from_millis(1)));
        assert!(check(Duration::ZERO, p), "previous secret still honoured");
        assert!(check(Duration::ZERO, p * 2 - Duration::from_millis(1)));
        assert!(!check(Duration::ZERO, p * 2), "rotated out");
        assert!(!check(Duration::ZERO, p * 10), "a long pause forgets both secrets");
        // Issued late in a period: still at least one full period.
        assert!(check(p - Duration::from_millis(1), p * 2 - Duration::from_millis(2)));
        // Issued after a pause: the schedule restarts at that moment.
        assert!(check(p * 5, p * 6 - Duration::from_millis(1)));
        assert!(!check(p * 5, p * 7 + Duration::from_millis(1)));
    }

    #[test]
    fn fragmented_multi_message_and_non_hello_records_are_unusable() {
        let now = Instant::now();
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let (c, s) = (addr("127.0.0.1:40109"), addr("127.0.0.1:40110"));
        let (_client, hello) = rust_client_hello(c, s, identity.cert_sha256(), now);
        let mut f = front(now);
        let mut mutate = |at: usize, value: u8| {
            let mut d = hello.to_vec();
            d[at] = value;
            f.check(now, c, &d)
        };
        assert!(matches!(mutate(0, 23), Verdict::Unusable), "not a handshake record");
        assert!(matches!(mutate(4, 1), Verdict::Unusable), "epoch 1");
        assert!(matches!(mutate(13, 2), Verdict::Unusable), "a ServerHello");
        assert!(matches!(mutate(13 + 8, 1), Verdict::Unusable), "fragment offset 1");
        assert!(matches!(mutate(13 + 11, hello[13 + 11].wrapping_sub(1)), Verdict::Unusable), "a short fragment");
        assert!(matches!(f.check(now, c, &hello[..hello.len() - 1]), Verdict::Unusable), "truncated");
        let mut two_messages = hello.to_vec();
        let record_len = u16::from_be_bytes([hello[11], hello[12]]) + 1;
        two_messages[11..13].copy_from_slice(&record_len.to_be_bytes());
        two_messages.push(0);
        assert!(matches!(f.check(now, c, &two_messages), Verdict::Unusable), "a record holding more than the hello");
        // A second record after the ClientHello is ignored; the hello is still answered.
        let mut trailing = hello.to_vec();
        trailing.extend_from_slice(&[21, 0xfe, 0xfd, 0, 0]);
        assert!(matches!(f.check(now, c, &trailing), Verdict::Challenge(_)));
    }

    /// The whole exchange in memory, with rtc-dtls on both sides: the front challenges, the
    /// client answers with the cookie, the server session is only created then (rtc's own cookie
    /// exchange replayed inside `accept_verified`), and the handshake completes and carries data.
    #[test]
    fn an_rtc_client_completes_the_handshake_through_the_front() {
        let now = Instant::now();
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let server_cfg = dtls::server_config(&identity).expect("server config");
        let (c, s) = (addr("127.0.0.1:40111"), addr("127.0.0.1:40112"));
        let (mut client, hello) = rust_client_hello(c, s, identity.cert_sha256(), now);
        let mut f = front(now);
        let hvr = challenge(f.check(now, c, &hello));
        client.receive(now, &hvr, &mut Vec::new()).expect("the client takes our HelloVerifyRequest");
        let second = client.poll_datagram().expect("second client hello");
        let (cookie, first_hello) = match f.check(now, c, &second) {
            Verdict::Verified { cookie, first_hello } => (cookie, first_hello),
            other => panic!("expected verified, got {other:?}"),
        };
        assert_eq!(cookie, cookie_of(&hvr));
        let mut server = DtlsSession::accept_verified(now, s, c, &server_cfg, cookie, &first_hello).expect("accept");
        assert!(server.poll_datagram().is_none(), "rtc's own HelloVerifyRequest is discarded");
        server.receive(now, &second, &mut Vec::new()).expect("the real ClientHello");
        let (mut client_events, mut server_events) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let mut moved = false;
            while let Some(d) = server.poll_datagram() {
                moved = true;
                let _ = client.receive(now, &d, &mut client_events);
            }
            while let Some(d) = client.poll_datagram() {
                moved = true;
                let _ = server.receive(now, &d, &mut server_events);
            }
            if !moved {
                break;
            }
        }
        assert!(client.is_established() && server.is_established(), "{client_events:?} {server_events:?}");
        client.send(now, b"through the front").expect("send");
        let mut got = Vec::new();
        while let Some(d) = client.poll_datagram() {
            server.receive(now, &d, &mut got).expect("data");
        }
        assert!(matches!(got.as_slice(), [DtlsEvent::Data(d)] if &d[..] == b"through the front"), "{got:?}");
    }

    /// When the first HelloVerifyRequest is lost, the client retransmits its first ClientHello
    /// (record sequence number 1) and the handshake must then complete without any further
    /// retransmission: the second HelloVerifyRequest's record sequence number must not shadow
    /// one of the records rtc-dtls sends next in the client's replay window.
    #[test]
    fn a_lost_hello_verify_request_costs_only_the_clients_retransmission() {
        let now = Instant::now();
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let server_cfg = dtls::server_config(&identity).expect("server config");
        let (c, s) = (addr("127.0.0.1:40117"), addr("127.0.0.1:40118"));
        let (mut client, hello) = rust_client_hello(c, s, identity.cert_sha256(), now);
        let mut f = front(now);
        let _lost = challenge(f.check(now, c, &hello));
        let later = client.next_timeout().expect("the client's retransmission timer");
        client.handle_timeout(later).expect("retransmit");
        let again = client.poll_datagram().expect("the retransmitted hello");
        assert_eq!(ClientHello::parse(&again).expect("parses").record_seq, 1);
        let hvr = challenge(f.check(later, c, &again));
        client.receive(later, &hvr, &mut Vec::new()).expect("hvr");
        let second = client.poll_datagram().expect("second client hello");
        let Verdict::Verified { cookie, first_hello } = f.check(later, c, &second) else { panic!("expected verified") };
        let mut server = DtlsSession::accept_verified(later, s, c, &server_cfg, cookie, &first_hello).expect("accept");
        server.receive(later, &second, &mut Vec::new()).expect("the real ClientHello");
        for _ in 0..20 {
            let mut moved = false;
            while let Some(d) = server.poll_datagram() {
                moved = true;
                let _ = client.receive(later, &d, &mut Vec::new());
            }
            while let Some(d) = client.poll_datagram() {
                moved = true;
                let _ = server.receive(later, &d, &mut Vec::new());
            }
            if !moved {
                break;
            }
        }
        assert!(client.is_established() && server.is_established(), "the handshake needed another retransmission");
    }

    #[test]
    fn a_wrong_cookie_in_the_replayed_exchange_fails_rtc_and_creates_no_session() {
        let now = Instant::now();
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let server_cfg = dtls::server_config(&identity).expect("server config");
        let (c, s) = (addr("127.0.0.1:40113"), addr("127.0.0.1:40114"));
        let (mut client, hello) = rust_client_hello(c, s, identity.cert_sha256(), now);
        let mut f = front(now);
        let hvr = challenge(f.check(now, c, &hello));
        client.receive(now, &hvr, &mut Vec::new()).expect("hvr");
        let second = client.poll_datagram().expect("second client hello");
        let Verdict::Verified { cookie, first_hello } = f.check(now, c, &second) else { panic!("expected verified") };
        // Arming rtc with another cookie than the client echoes makes rtc refuse the real
        // ClientHello: proof that the armed cookie is the one rtc compares.
        let mut other = cookie;
        other[0] ^= 1;
        let mut server = DtlsSession::accept_verified(now, s, c, &server_cfg, other, &first_hello).expect("accept");
        assert!(matches!(server.receive(now, &second, &mut Vec::new()), Err(dtls::ReadError::Fatal(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Garbage never panics the front and never verifies.
        #[test]
        fn random_datagrams_never_panic_or_verify(datagram in proptest::collection::vec(any::<u8>(), 0..400)) {
            let now = Instant::now();
            let mut f = front(now);
            let verdict = f.check(now, addr("10.0.0.1:5000"), &datagram);
            let verified = matches!(verdict, Verdict::Verified { .. });
            prop_assert!(!verified, "garbage verified: {:?}", verdict);
        }

        /// A real ClientHello with random bytes overwritten, truncated or extended never panics
        /// the parser; whatever it accepts, its rewrites parse back consistently.
        #[test]
        fn mutated_client_hellos_never_panic_and_rewrite_consistently(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            cookie in proptest::collection::vec(any::<u8>(), 0..40),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let now = Instant::now();
            let c = addr("127.0.0.1:40115");
            let hello = sample_hello();
            let mut d = if cookie.is_empty() { hello.to_vec() } else { with_cookie(hello, &cookie) };
            for (at, value) in edits {
                let i = at.index(d.len());
                d[i] = value;
            }
            if let Some(cut) = cut {
                d.truncate(cut.index(d.len() + 1));
            }
            d.extend_from_slice(&tail);
            let mut f = front(now);
            let _ = f.check(now, c, &d);
            if let Some(parsed) = ClientHello::parse(&d) {
                let first = parsed.first_hello();
                let reparsed = ClientHello::parse(&first).expect("the first hello parses");
                prop_assert!(reparsed.cookie.is_empty());
                prop_assert_eq!(reparsed.message_seq, 0);
                prop_assert_eq!(reparsed.before_cookie, parsed.before_cookie);
                prop_assert_eq!(reparsed.after_cookie, parsed.after_cookie);
                prop_assert_ne!(reparsed.record_seq, parsed.record_seq);
                let hvr = parsed.hello_verify_request(&[7; COOKIE_LEN]);
                prop_assert_eq!(hvr.len(), 48);
                prop_assert_eq!(&hvr[..3], &d[..3]);
                prop_assert_eq!(&hvr[3..11], &[0u8; 8][..]);
            }
        }
    }
}
