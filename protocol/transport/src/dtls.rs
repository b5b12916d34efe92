//! The DTLS 1.2 session under ENet: a small sans-IO wrapper over rtc-dtls, so the rest of the
//! crate sees one session type (datagrams in, events and datagrams out, one timer) and the DTLS
//! crate can be swapped by rewriting this file alone.
//!
//! Each session owns its own rtc-dtls `Endpoint` holding exactly one association: the server's
//! session table (caps, timers, eviction) lives in the ENet server, not in the DTLS crate.
//!
//! HelloVerifyRequest cookies are the server's own stateless front (`enet::cookie`), not
//! rtc-dtls's: rtc creates its association, and so state, on any first ClientHello. A server
//! session is therefore only created for a ClientHello whose cookie the front verified, and
//! rtc's own cookie exchange is replayed in memory with the front's cookie (see
//! [`DtlsSession::accept_verified`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::BytesMut;
use rtc_crypto::{CryptoError, RTCCrypto, RTCCryptoProvider, RTCRandom, SignatureScheme};
use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_shared::TransportProtocol;
use rtc_shared::error::Error as DtlsError;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::cert::{ServerIdentity, provider};
use crate::error::TransportError;

/// The only cipher suites offered or accepted: ECDHE-ECDSA with an AEAD. The client's order
/// decides between them (rtc-dtls picks the first of the client's list it supports).
pub(crate) const AEAD_SUITES: [CipherSuiteId; 2] = [
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_ChaCha20_Poly1305_Sha256,
];

/// Handshake datagrams are fragmented to stay within this size (rtc-dtls adds ~25 bytes of
/// headers), so they fit the IPv6 minimum path MTU like ENet's own datagrams.
const HANDSHAKE_MTU: usize = 1200;

/// The length of rtc-dtls's HelloVerifyRequest cookie (its `COOKIE_LENGTH`), and so of ours: the
/// front's cookie has to stand in for the one rtc draws.
pub(crate) const COOKIE_LEN: usize = 20;

/// A built DTLS configuration, shared by every session of a server or client.
#[derive(Clone)]
pub(crate) struct DtlsConfig {
    handshake: Arc<HandshakeConfig>,
    /// Server configurations only: the provider rtc-dtls draws its cookies from, which
    /// `accept_verified` arms with the front's cookie.
    cookies: Option<Arc<CookieProvider>>,
}

/// The crypto provider of a server configuration: the default provider, except that one 20-byte
/// random fill can be armed to return a given cookie instead.
///
/// rtc-dtls 0.21.1 draws its HelloVerifyRequest cookie with `provider().random().fill(cookie)`
/// (flight 0), from the provider inside the shared `HandshakeConfig`; nothing else in rtc fills
/// 20 bytes (the handshake random is 28, AEAD nonces 8, CBC IVs 16). Arming is a slot on the one
/// provider rather than a provider per session because a `HandshakeConfig` can only be made by
/// `ConfigBuilder::build` (certificate and key import each time), and is safe because the owner
/// task is the only user of its server's configuration and arms, feeds and disarms within one
/// synchronous call: no other fill can run in between. The slot is taken by the first 20-byte
/// fill and disarmed after the call whatever happened, so it can never leak into a later session.
struct CookieProvider {
    inner: Arc<dyn RTCCryptoProvider>,
    armed: Mutex<Option<[u8; COOKIE_LEN]>>,
}

impl CookieProvider {
    fn arm(&self, cookie: [u8; COOKIE_LEN]) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(cookie);
    }

    /// Empties the slot; true if the cookie was never drawn.
    fn disarm(&self) -> bool {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner).take().is_some()
    }
}

impl RTCCryptoProvider for CookieProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        self.inner.crypto()
    }

    fn random(&self) -> &dyn RTCRandom {
        self
    }
}

impl RTCRandom for CookieProvider {
    fn fill(&self, output: &mut [u8]) -> Result<(), CryptoError> {
        // Only a cookie-sized fill looks at the slot, so AEAD nonces (every record) skip the lock.
        if output.len() == COOKIE_LEN
            && let Some(cookie) = self.armed.lock().unwrap_or_else(PoisonError::into_inner).take()
        {
            output.copy_from_slice(&cookie);
            return Ok(());
        }
        self.inner.random().fill(output)
    }
}

/// How a client decides to trust the server's certificate.
pub(crate) enum Verify<'a> {
    /// Chain to one of these PEM certificates, with the server name checked against the leaf.
    Ca { ca_pem: &'a str, server_name: &'a str },
    /// Accept exactly the leaf whose DER hashes to this SHA-256.
    Pin([u8; 32]),
}

/// The server side: AEAD suites only, HelloVerifyRequest cookies (the front's, replayed into
/// rtc-dtls), no client certificate, extended master secret when the client offers it (mbedTLS
/// does).
pub(crate) fn server_config(identity: &ServerIdentity) -> Result<DtlsConfig, TransportError> {
    let cookies = Arc::new(CookieProvider { inner: provider()?, armed: Mutex::new(None) });
    let provider: Arc<dyn RTCCryptoProvider> = cookies.clone();
    let key = provider
        .crypto()
        .import_signing_key(SignatureScheme::EcdsaP256Sha256, identity.key_pkcs8())
        .map_err(|e| TransportError::TlsConfig(format!("importing the DTLS key: {e}")))?;
    let chain = identity.chain_der().iter().map(|der| CertificateDer::from(der.clone())).collect();
    let certificate = Certificate::from_signing_key(chain, key);
    let config = ConfigBuilder::default()
        .with_crypto_provider(provider)
        .with_certificates(vec![certificate])
        .with_cipher_suites(AEAD_SUITES.to_vec())
        .with_client_auth(ClientAuthType::NoClientCert)
        .with_extended_master_secret(ExtendedMasterSecretType::Request)
        .with_mtu(HANDSHAKE_MTU)
        .build(false, None)
        .map_err(|e| TransportError::Config(format!("dtls server config: {e}")))?;
    Ok(DtlsConfig { handshake: Arc::new(config), cookies: Some(cookies) })
}

/// The client side, verifying the server by CA chain and name, or by pinned leaf hash.
pub(crate) fn client_config(verify: Verify<'_>, server: SocketAddr) -> Result<DtlsConfig, TransportError> {
    let provider = provider()?;
    let builder = ConfigBuilder::default()
        .with_crypto_provider(provider.clone())
        .with_cipher_suites(AEAD_SUITES.to_vec())
        .with_extended_master_secret(ExtendedMasterSecretType::Request)
        .with_mtu(HANDSHAKE_MTU);
    let builder = match verify {
        Verify::Ca { ca_pem, server_name } => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
                let cert = cert.map_err(|e| TransportError::TlsConfig(format!("unreadable CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| TransportError::TlsConfig(format!("unusable CA certificate: {e}")))?;
            }
            // An empty store would make rtc-dtls substitute a random root and fail every
            // handshake with a confusing error; say what is wrong instead.
            if roots.is_empty() {
                return Err(TransportError::TlsConfig("no CERTIFICATE block in the CA PEM".into()));
            }
            builder.with_roots_cas(roots).with_server_name(server_name.to_owned())
        }
        Verify::Pin(pin) => {
            let hasher = provider.clone();
            builder.with_insecure_skip_verify(true).with_verify_peer_certificate(Some(Arc::new(
                move |certs: &[Vec<u8>], _chains: &[CertificateDer<'static>]| {
                    let leaf = certs.first().ok_or_else(|| DtlsError::Other("no server certificate".into()))?;
                    let digest = hasher
                        .crypto()
                        .hash(rtc_crypto::HashAlgorithm::Sha256, leaf)
                        .map_err(|e| DtlsError::Other(e.to_string()))?;
                    if rtc_crypto::constant_time_eq(&digest, &pin) {
                        Ok(())
                    } else {
                        Err(DtlsError::Other(format!(
                            "server certificate sha-256 {} does not match the pinned {}",
                            crate::cert::hex(&digest),
                            crate::cert::hex(&pin)
                        )))
                    }
                },
            )))
        }
    };
    let config = builder
        .build(true, Some(server))
        .map_err(|e| TransportError::Config(format!("dtls client config: {e}")))?;
    Ok(DtlsConfig { handshake: Arc::new(config), cookies: None })
}

/// What a session reports while reading a datagram.
#[derive(Debug)]
pub(crate) enum DtlsEvent {
    /// The handshake completed; application data flows from now on.
    Established,
    /// One decrypted record: exactly one datagram of the protocol carried inside.
    Data(BytesMut),
    /// The peer sent close_notify; the reply is queued and the session is finished.
    PeerClosed,
}

/// Why a datagram could not be used.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The session is dead: a fatal alert, or any failure before the handshake completed.
    Fatal(String),
    /// The datagram was discarded; an established session lives on, so that a forged datagram
    /// cannot tear it down.
    Discarded(String),
}

/// One DTLS association with one remote address.
pub(crate) struct DtlsSession {
    endpoint: Endpoint,
    remote: SocketAddr,
    established: bool,
    /// The epoch-0 handshake messages (bit = message_seq) rtc-dtls has been given whole, so that
    /// repeats of them can be kept from it until the handshake completes (see `receive`).
    received: u64,
}

/// Why `accept_verified` made no session, and what rtc-dtls answered (a fatal alert, say for no
/// common cipher suite), for the caller to send.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) reason: String,
    pub(crate) replies: Vec<BytesMut>,
}

impl DtlsSession {
    /// A server session for `remote` whose ClientHello carried a cookie the stateless front
    /// verified; the caller then passes that ClientHello, unchanged, to `receive`.
    ///
    /// rtc-dtls cannot skip its own cookie exchange: its server association starts in flight 0,
    /// draws a cookie, answers the first ClientHello with a HelloVerifyRequest, and in flight 2
    /// accepts only a ClientHello (message_seq 1) echoing that cookie. So the exchange is replayed
    /// here: `cookie` is armed as rtc's cookie draw, `first_hello` (the client's ClientHello
    /// without the cookie, message_seq 0; see `ClientHello::first_hello`) is fed, and rtc's
    /// HelloVerifyRequest is discarded, since the client already has the front's, with the same
    /// cookie. The transcript is unaffected: rtc hashes the ClientHello with the highest
    /// message_seq (the real one) and never the HelloVerifyRequest, as RFC 6347 §4.2.6 requires.
    pub(crate) fn accept_verified(
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        config: &DtlsConfig,
        cookie: [u8; COOKIE_LEN],
        first_hello: &[u8],
    ) -> Result<Self, Refusal> {
        let refuse = |reason: String, replies: Vec<BytesMut>| Refusal { reason, replies };
        let slot = config.cookies.as_ref().ok_or_else(|| refuse("not a server configuration".into(), Vec::new()))?;
        let mut session = Self::accept(local, remote, config);
        slot.arm(cookie);
        let result = session.endpoint.read(now, remote, None, BytesMut::from(first_hello));
        let undrawn = slot.disarm();
        mark_received(first_hello, &mut session.received);
        let replies: Vec<BytesMut> = std::iter::from_fn(|| session.poll_datagram()).collect();
        if let Err(e) = result {
            return Err(refuse(e.to_string(), replies));
        }
        if undrawn {
            return Err(refuse("rtc-dtls did not draw its cookie from the provider".into(), Vec::new()));
        }
        // What rtc sends here must be its HelloVerifyRequest and nothing else (record type 22,
        // handshake type 3); anything more means its flights changed under this replay.
        if !replies.iter().all(|d| matches!(d.get(..14), Some([22, _, _, 0, 0, _, _, _, _, _, _, _, _, 3]))) {
            return Err(refuse("rtc-dtls answered the replayed ClientHello with more than a HelloVerifyRequest".into(), Vec::new()));
        }
        Ok(session)
    }

    /// A server session for `remote` with no cookie exchange replayed: it expects a ClientHello
    /// without a cookie first. Only `accept_verified` and tests use it.
    pub(crate) fn accept(local: SocketAddr, remote: SocketAddr, config: &DtlsConfig) -> Self {
        DtlsSession {
            endpoint: Endpoint::new(local, TransportProtocol::UDP, Some(config.handshake.clone())),
            remote,
            established: false,
            received: 0,
        }
    }

    /// A client session; the ClientHello is queued for `poll_datagram`.
    pub(crate) fn connect(
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        config: &DtlsConfig,
    ) -> Result<Self, TransportError> {
        let mut endpoint = Endpoint::new(local, TransportProtocol::UDP, None);
        endpoint
            .connect(now, remote, config.handshake.clone(), None)
            .map_err(|e| TransportError::Handshake(e.to_string()))?;
        Ok(DtlsSession { endpoint, remote, established: false, received: 0 })
    }

    /// Feeds one datagram from the remote, appending what it produced to `events`.
    ///
    /// Until the handshake completes, a datagram that only repeats epoch-0 handshake messages
    /// rtc-dtls already has is discarded unread. rtc-dtls 0.21.1 clears its retransmission timer
    /// whenever it reads a handshake record while waiting for the peer's next flight, and re-arms
    /// it only when that flight is complete; so the peer repeating its previous flight (because
    /// ours was lost) would stop rtc from ever resending ours, and the handshake would stall until
    /// it expired. rtc ignores such repeats otherwise (its handshake cache keeps the first copy),
    /// and its own timer resends our flight. Once established, repeats go through: rtc answers a
    /// repeated final flight by resending its own (RFC 6347 §4.2.4).
    pub(crate) fn receive(&mut self, now: Instant, datagram: &[u8], events: &mut Vec<DtlsEvent>) -> Result<(), ReadError> {
        if !self.established && repeats_only(datagram, self.received) {
            return Err(ReadError::Discarded("a repeat of handshake messages already received".into()));
        }
        match self.endpoint.read(now, self.remote, None, BytesMut::from(datagram)) {
            Ok(produced) => {
                if !self.established {
                    mark_received(datagram, &mut self.received);
                }
                for event in produced {
                    match event {
                        EndpointEvent::HandshakeComplete => {
                            self.established = true;
                            events.push(DtlsEvent::Established);
                        }
                        EndpointEvent::ApplicationData(data) => events.push(DtlsEvent::Data(data)),
                        EndpointEvent::PeerClosed => events.push(DtlsEvent::PeerClosed),
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(e) if !self.established || matches!(e, DtlsError::ErrAlertFatalOrClose) => {
                Err(ReadError::Fatal(e.to_string()))
            }
            Err(e) => Err(ReadError::Discarded(e.to_string())),
        }
    }

    /// Encrypts one record carrying `data`; the datagram is queued for `poll_datagram`.
    pub(crate) fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), String> {
        self.endpoint.write(now, self.remote, data).map_err(|e| e.to_string())
    }

    /// The next datagram to put on the wire.
    pub(crate) fn poll_datagram(&mut self) -> Option<BytesMut> {
        self.endpoint.poll_transmit().map(|t| t.message)
    }

    /// When `handle_timeout` must next run (handshake retransmissions), if ever.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout(&self.remote)
    }

    /// Retransmits the current handshake flight if its timer is due; fails once the handshake
    /// has used up its retransmissions.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), String> {
        match self.endpoint.handle_timeout(self.remote, now) {
            Ok(()) => Ok(()),
            // The association is already gone (closed by the peer): nothing to retransmit.
            Err(DtlsError::InvalidRemoteAddress(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Ends the session, queueing close_notify for `poll_datagram`.
    pub(crate) fn close(&mut self, now: Instant) {
        let _ = self.endpoint.stop(now, self.remote);
    }

    /// The negotiated suite's IANA name, once the handshake has chosen one.
    pub(crate) fn cipher_suite(&self) -> Option<String> {
        let state = self.endpoint.get_connection_state(self.remote)?;
        state.cipher_suite().map(|suite| suite.to_string())
    }

    pub(crate) fn is_established(&self) -> bool {
        self.established
    }

    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }
}

/// Calls `each` with the message_seq of every unfragmented handshake message in `datagram`
/// (`None` for a fragment); false, after calling it for none or some, unless every record of the
/// datagram is a well-formed epoch-0 handshake record.
fn epoch0_handshake_messages(datagram: &[u8], mut each: impl FnMut(Option<u16>)) -> bool {
    let mut rest = datagram;
    while !rest.is_empty() {
        // Record header: type(1) version(2) epoch(2) sequence(6) length(2).
        let Some(&[22, _, _, 0, 0, _, _, _, _, _, _, len_hi, len_lo]) = rest.get(..13) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let Some(mut record) = rest.get(13..13 + len) else {
            return false;
        };
        rest = rest.get(13 + len..).unwrap_or_default();
        while !record.is_empty() {
            // Handshake header: type(1) length(3) message_seq(2) fragment_offset(3)
            // fragment_length(3).
            let Some(&[_, l0, l1, l2, s0, s1, o0, o1, o2, f0, f1, f2]) = record.get(..12) else {
                return false;
            };
            let u24 = |a: u8, b: u8, c: u8| u32::from_be_bytes([0, a, b, c]);
            let (length, offset, fragment) = (u24(l0, l1, l2), u24(o0, o1, o2), u24(f0, f1, f2));
            let Some(next) = record.get(12 + fragment as usize..) else {
                return false;
            };
            each((offset == 0 && fragment == length).then_some(u16::from_be_bytes([s0, s1])));
            record = next;
        }
    }
    true
}

/// True when `datagram` holds epoch-0 handshake messages only, each unfragmented and already in
/// `received`.
fn repeats_only(datagram: &[u8], received: u64) -> bool {
    let mut any = false;
    let mut all_received = true;
    let well_formed = epoch0_handshake_messages(datagram, |seq| {
        any = true;
        all_received &= seq.is_some_and(|s| s < 64 && received & (1 << s) != 0);
    });
    well_formed && any && all_received
}

/// Adds the unfragmented epoch-0 handshake messages of `datagram` to `received`.
fn mark_received(datagram: &[u8], received: &mut u64) {
    epoch0_handshake_messages(datagram, |seq| {
        if let Some(s) = seq.filter(|s| *s < 64) {
            *received |= 1 << s;
        }
    });
}

/// True when `datagram` starts with a DTLS record that can begin a handshake: content type
/// handshake, DTLS 1.0/1.2 version, epoch 0, and a ClientHello (first fragment) inside. Only such
/// a datagram may create state for an unknown address.
pub(crate) fn is_client_hello(datagram: &[u8]) -> bool {
    // Record header: type(1) version(2) epoch(2) sequence(6) length(2).
    let [22, 0xfe, minor, 0, 0, _, _, _, _, _, _, len_hi, len_lo, rest @ ..] = datagram else {
        return false;
    };
    if *minor != 0xff && *minor != 0xfd {
        return false;
    }
    let record_len = usize::from(u16::from_be_bytes([*len_hi, *len_lo]));
    // Handshake header: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3),
    // then at least the client version and random.
    let Some(record) = rest.get(..record_len) else {
        return false;
    };
    matches!(record, [1, _, _, _, _, _, 0, 0, 0, _, _, _, 0xfe, _, ..] if record.len() >= 12 + 2 + 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (DtlsSession, DtlsSession, Instant) {
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let server_cfg = server_config(&identity).expect("server config");
        let client_addr: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        let server_addr: SocketAddr = "127.0.0.1:40002".parse().expect("addr");
        let client_cfg = client_config(Verify::Pin(identity.cert_sha256()), server_addr).expect("client config");
        let now = Instant::now();
        let client = DtlsSession::connect(now, client_addr, server_addr, &client_cfg).expect("connect");
        let server = DtlsSession::accept(server_addr, client_addr, &server_cfg);
        (client, server, now)
    }

    /// Moves datagrams both ways until neither side has anything to say, returning the events.
    fn pump(client: &mut DtlsSession, server: &mut DtlsSession, now: Instant) -> (Vec<DtlsEvent>, Vec<DtlsEvent>) {
        let (mut ce, mut se) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let mut moved = false;
            while let Some(d) = client.poll_datagram() {
                moved = true;
                let _ = server.receive(now, &d, &mut se);
            }
            while let Some(d) = server.poll_datagram() {
                moved = true;
                let _ = client.receive(now, &d, &mut ce);
            }
            if !moved {
                break;
            }
        }
        (ce, se)
    }

    #[test]
    fn handshake_completes_with_an_aead_suite_and_carries_records_both_ways() {
        let (mut client, mut server, now) = pair();
        let first = client.poll_datagram().expect("client hello");
        assert!(is_client_hello(&first));
        let mut se = Vec::new();
        server.receive(now, &first, &mut se).expect("hello");
        let (ce, se) = pump(&mut client, &mut server, now);
        assert!(matches!(ce.first(), Some(DtlsEvent::Established)), "{ce:?}");
        assert!(se.iter().any(|e| matches!(e, DtlsEvent::Established)), "{se:?}");
        let suite = server.cipher_suite().expect("suite");
        assert!(suite.contains("GCM") || suite.contains("CHACHA20"), "{suite}");
        assert_eq!(client.cipher_suite(), Some(suite));

        client.send(now, b"ping").expect("send");
        let (_, se) = pump(&mut client, &mut server, now);
        assert!(matches!(se.as_slice(), [DtlsEvent::Data(d)] if &d[..] == b"ping"), "{se:?}");

        // Garbage on an established session is discarded, and the session lives on.
        let mut ev = Vec::new();
        assert!(matches!(server.receive(now, &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 2, 1, 2], &mut ev), Ok(()) | Err(ReadError::Discarded(_))));
        server.send(now, b"pong").expect("send");
        let (ce, _) = pump(&mut client, &mut server, now);
        assert!(matches!(ce.as_slice(), [DtlsEvent::Data(d)] if &d[..] == b"pong"), "{ce:?}");

        client.close(now);
        let (_, se) = pump(&mut client, &mut server, now);
        assert!(se.iter().any(|e| matches!(e, DtlsEvent::PeerClosed)), "{se:?}");
    }

    #[test]
    fn a_wrong_pin_fails_the_handshake() {
        let identity = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let other = ServerIdentity::self_signed(&["localhost"]).expect("identity");
        let server_cfg = server_config(&identity).expect("server config");
        let c: SocketAddr = "127.0.0.1:40003".parse().expect("addr");
        let s: SocketAddr = "127.0.0.1:40004".parse().expect("addr");
        let client_cfg = client_config(Verify::Pin(other.cert_sha256()), s).expect("client config");
        let now = Instant::now();
        let mut client = DtlsSession::connect(now, c, s, &client_cfg).expect("connect");
        let mut server = DtlsSession::accept(s, c, &server_cfg);
        let mut failed = false;
        for _ in 0..10 {
            while let Some(d) = client.poll_datagram() {
                let _ = server.receive(now, &d, &mut Vec::new());
            }
            while let Some(d) = server.poll_datagram() {
                if let Err(ReadError::Fatal(_)) = client.receive(now, &d, &mut Vec::new()) {
                    failed = true;
                }
            }
        }
        assert!(failed);
        assert!(!client.is_established());
        let _ = client.handle_timeout(now + Duration::from_secs(2));
    }

    /// Delivers every datagram `from` has queued to `to`, returning how many there were.
    fn deliver(from: &mut DtlsSession, to: &mut DtlsSession, now: Instant) -> usize {
        let mut n = 0;
        while let Some(d) = from.poll_datagram() {
            n += 1;
            let _ = to.receive(now, &d, &mut Vec::new());
        }
        n
    }

    /// Drops every datagram `from` has queued (the network lost them).
    fn lose(from: &mut DtlsSession) -> usize {
        std::iter::from_fn(|| from.poll_datagram()).count()
    }

    /// Runs the handshake to its end at `now`, without timers.
    fn finish(client: &mut DtlsSession, server: &mut DtlsSession, now: Instant) {
        for _ in 0..10 {
            if deliver(client, server, now) + deliver(server, client, now) == 0 {
                break;
            }
        }
    }

    /// The client's flight 5 is lost, and the server's resent flight 4 reaches the client before
    /// the client's own timer: the client must still resend flight 5 when that timer fires.
    #[test]
    fn a_repeated_server_flight_does_not_stop_the_client_resending_its_lost_flight() {
        let (mut client, mut server, now) = pair();
        deliver(&mut client, &mut server, now); // ClientHello
        deliver(&mut server, &mut client, now); // HelloVerifyRequest
        deliver(&mut client, &mut server, now); // ClientHello with the cookie
        deliver(&mut server, &mut client, now); // flight 4
        assert!(lose(&mut client) > 0, "flight 5 lost");
        let server_timer = server.next_timeout().expect("server timer");
        let client_timer = client.next_timeout().expect("client timer");
        server.handle_timeout(server_timer).expect("server resends flight 4");
        let early = server_timer.min(client_timer - Duration::from_millis(1));
        assert!(deliver(&mut server, &mut client, early) > 0);
        let client_timer = client.next_timeout().expect("the client's timer survives the repeat");
        client.handle_timeout(client_timer).expect("client resends flight 5");
        finish(&mut client, &mut server, client_timer);
        assert!(client.is_established() && server.is_established());
    }

    /// The server's flight 4 is lost and the client repeats its ClientHello before the server's
    /// timer: the server must still resend flight 4 when that timer fires.
    #[test]
    fn a_repeated_client_hello_does_not_stop_the_server_resending_its_lost_flight() {
        let (mut client, mut server, now) = pair();
        deliver(&mut client, &mut server, now);
        deliver(&mut server, &mut client, now);
        deliver(&mut client, &mut server, now);
        assert!(lose(&mut server) > 0, "flight 4 lost");
        let server_timer = server.next_timeout().expect("server timer");
        let client_timer = client.next_timeout().expect("client timer");
        client.handle_timeout(client_timer).expect("client repeats its ClientHello");
        assert!(deliver(&mut client, &mut server, client_timer.min(server_timer - Duration::from_millis(1))) > 0);
        let server_timer = server.next_timeout().expect("the server's timer survives the repeat");
        server.handle_timeout(server_timer).expect("server resends flight 4");
        finish(&mut client, &mut server, server_timer);
        assert!(client.is_established() && server.is_established());
    }

    #[test]
    fn only_repeats_of_whole_epoch0_handshake_messages_count_as_repeats() {
        // One record: a handshake message (type 2, length 3, message_seq 1, unfragmented).
        let record = |epoch: u8, seq: u8, offset: u8, fragment: u8| {
            let mut d = vec![22, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, 7, 0, 12 + fragment];
            d.extend_from_slice(&[2, 0, 0, 3, 0, seq, 0, 0, offset, 0, 0, fragment]);
            d.extend(std::iter::repeat_n(0xAA, usize::from(fragment)));
            d
        };
        let mut received = 0;
        mark_received(&record(0, 1, 0, 3), &mut received);
        assert_eq!(received, 0b10);
        assert!(repeats_only(&record(0, 1, 0, 3), received));
        assert!(repeats_only(&[record(0, 1, 0, 3), record(0, 1, 0, 3)].concat(), received));
        assert!(!repeats_only(&record(0, 2, 0, 3), received), "a new message");
        assert!(!repeats_only(&[record(0, 1, 0, 3), record(0, 2, 0, 3)].concat(), received), "one new message");
        assert!(!repeats_only(&record(0, 1, 1, 2), received), "a fragment");
        assert!(!repeats_only(&record(1, 1, 0, 3), received), "epoch 1");
        let mut with_ccs = record(0, 1, 0, 3);
        with_ccs.extend_from_slice(&[20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1, 1]);
        assert!(!repeats_only(&with_ccs, received), "a ChangeCipherSpec");
        assert!(!repeats_only(&[], received));
        let full = record(0, 1, 0, 3);
        for cut in 0..full.len() {
            assert!(!repeats_only(&full[..cut], received), "truncated at {cut}");
        }
        mark_received(&record(0, 1, 1, 2), &mut received);
        mark_received(&record(0, 63, 0, 3), &mut received);
        mark_received(&record(0, 200, 0, 3), &mut received);
        assert_eq!(received, 0b10 | 1 << 63, "fragments and message_seq past 63 are not tracked");
        assert!(!repeats_only(&record(0, 200, 0, 3), received));
    }

    proptest::proptest! {
        #[test]
        fn the_repeat_reader_never_panics(datagram in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut received = 0;
            mark_received(&datagram, &mut received);
            let _ = repeats_only(&datagram, received);
            let _ = is_client_hello(&datagram);
        }
    }

    #[test]
    fn only_a_client_hello_passes_the_first_datagram_filter() {
        assert!(!is_client_hello(&[]));
        assert!(!is_client_hello(&[22, 0xfe, 0xfd]));
        assert!(!is_client_hello(&[0u8; 100]));
        let mut hello = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60];
        hello.extend_from_slice(&[1, 0, 0, 48, 0, 0, 0, 0, 0, 0, 0, 48, 0xfe, 0xfd]);
        hello.resize(13 + 60, 0);
        assert!(is_client_hello(&hello));
        let mut not_hello = hello.clone();
        not_hello[13] = 2;
        assert!(!is_client_hello(&not_hello));
        let mut epoch1 = hello.clone();
        epoch1[4] = 1;
        assert!(!is_client_hello(&epoch1));
        let truncated = &hello[..40];
        assert!(!is_client_hello(truncated));
    }
}
