//! The DTLS server identity: an ECDSA P-256 certificate chain and its key, generated self-signed
//! and persisted for the embedded default, or loaded from PEM files in production.
//!
//! Keys are kept as PKCS#8 DER and imported into the DTLS crate's provider when a server starts,
//! because rtc-dtls's own PEM loader wants a non-standard `PRIVATE_KEY` tag; the files on disk use
//! the standard `CERTIFICATE` and `PRIVATE KEY` tags every other tool reads.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use rtc_crypto::{HashAlgorithm, SignatureScheme};

use crate::error::TransportError;

/// The names the embedded default's self-signed certificate carries (DESIGN §2).
pub const DEFAULT_CERT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// The file names [`ServerIdentity::load_or_create`] reads and writes in its directory.
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// The DTLS server identity: ECDSA P-256 certificate (leaf first, then any intermediates) + key.
#[derive(Clone)]
pub struct ServerIdentity {
    /// DER certificates, leaf first.
    chain: Vec<Vec<u8>>,
    /// The leaf's private key, PKCS#8 DER.
    key_pkcs8: Vec<u8>,
    /// SHA-256 of the leaf DER, what clients pin.
    leaf_sha256: [u8; 32],
}

impl ServerIdentity {
    /// A fresh self-signed certificate naming `names` (DNS names or IP literals, e.g.
    /// `["localhost", "127.0.0.1"]`), with a new ECDSA P-256 key.
    pub fn self_signed(names: &[&str]) -> Result<ServerIdentity, TransportError> {
        let bad = |e: rcgen::Error| TransportError::TlsConfig(format!("generating a self-signed certificate: {e}"));
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).map_err(bad)?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "Tavern DTLS (self-signed)");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(bad)?;
        let cert = params.self_signed(&key).map_err(bad)?;
        Self::from_der(vec![cert.der().to_vec()], key.serialize_der())
    }

    /// Loads `dir/cert.pem` and `dir/key.pem`, or, when neither exists, creates `dir` and writes a
    /// fresh self-signed identity for `localhost` and `127.0.0.1` there (the key file with mode
    /// 0600). Fails, writing nothing, when only one of the two files exists.
    pub fn load_or_create(dir: &Path) -> Result<ServerIdentity, TransportError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::from_pem_files(&cert_path, &key_path),
            (false, false) => {
                let identity = Self::self_signed(&DEFAULT_CERT_NAMES)?;
                create_private_dir(dir)
                    .map_err(|e| io_error(format!("creating certificate directory {}", dir.display()), e))?;
                write_new_file(&key_path, identity.key_pem().as_bytes(), 0o600)
                    .map_err(|e| io_error(format!("writing {}", key_path.display()), e))?;
                write_new_file(&cert_path, identity.cert_pem().as_bytes(), 0o644)
                    .map_err(|e| io_error(format!("writing {}", cert_path.display()), e))?;
                tracing::info!(cert = %cert_path.display(), "created a self-signed DTLS certificate");
                Ok(identity)
            }
            (true, false) => Err(TransportError::TlsConfig(format!(
                "{} exists but {} does not; restore the key or remove both to create a new identity",
                cert_path.display(),
                key_path.display()
            ))),
            (false, true) => Err(TransportError::TlsConfig(format!(
                "{} exists but {} does not; restore the certificate or remove both to create a new identity",
                key_path.display(),
                cert_path.display()
            ))),
        }
    }

    /// Loads a production identity: `cert` holds the PEM chain (leaf first), `key` the leaf's
    /// ECDSA P-256 key as PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) PEM.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerIdentity, TransportError> {
        let cert_text = fs::read(cert).map_err(|e| io_error(format!("reading {}", cert.display()), e))?;
        let key_text = fs::read(key).map_err(|e| io_error(format!("reading {}", key.display()), e))?;
        warn_if_key_readable_by_others(key);
        Self::from_pem(&cert_text, &key_text)
            .map_err(|e| TransportError::TlsConfig(format!("{} / {}: {e}", cert.display(), key.display())))
    }

    /// Parses a PEM chain (leaf first) and a PEM key; see [`ServerIdentity::from_pem_files`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerIdentity, TransportError> {
        let chain = rustls_pemfile::certs(&mut &cert_pem[..])
            .map(|c| c.map(|c| c.as_ref().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::TlsConfig(format!("unreadable certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(TransportError::TlsConfig("no CERTIFICATE block in the certificate PEM".into()));
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| TransportError::TlsConfig(format!("unreadable key PEM: {e}")))?
            .ok_or_else(|| TransportError::TlsConfig("no private key block in the key PEM".into()))?;
        let pkcs8 = match key {
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Sec1(k) => p256_sec1_to_pkcs8(k.secret_sec1_der()),
            _ => {
                return Err(TransportError::TlsConfig(
                    "the key is not an ECDSA P-256 key (PKCS#8 or SEC1 expected)".into(),
                ));
            }
        };
        Self::from_der(chain, pkcs8)
    }

    /// Builds an identity from DER certificates (leaf first) and a PKCS#8 key, checking that the
    /// key is ECDSA P-256 and belongs to the leaf.
    pub fn from_der(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<ServerIdentity, TransportError> {
        let provider = provider()?;
        let leaf = chain
            .first()
            .ok_or_else(|| TransportError::TlsConfig("empty certificate chain".into()))?;
        let key = provider
            .crypto()
            .import_signing_key(SignatureScheme::EcdsaP256Sha256, &key_pkcs8)
            .map_err(|e| TransportError::TlsConfig(format!("the key is not a usable ECDSA P-256 key: {e}")))?;
        // The SubjectPublicKeyInfo of a P-256 leaf holds the key's 65-byte uncompressed point
        // verbatim; not finding it means the key belongs to another certificate.
        let public = key.public_key().bytes.to_vec();
        if public.len() < 32 || !leaf.windows(public.len()).any(|w| w == public.as_slice()) {
            return Err(TransportError::TlsConfig("the private key does not match the leaf certificate".into()));
        }
        let digest = provider
            .crypto()
            .hash(HashAlgorithm::Sha256, leaf)
            .map_err(|e| TransportError::TlsConfig(format!("hashing the certificate: {e}")))?;
        let leaf_sha256: [u8; 32] = digest
            .as_slice()
            .try_into()
            .map_err(|_| TransportError::TlsConfig(format!("sha-256 gave {} bytes", digest.len())))?;
        Ok(ServerIdentity { chain, key_pkcs8, leaf_sha256 })
    }

    /// The certificate chain as PEM, leaf first: what clients pin or trust as their CA.
    pub fn cert_pem(&self) -> String {
        self.chain.iter().map(|der| pem_block("CERTIFICATE", der)).collect()
    }

    /// SHA-256 of the leaf certificate's DER: the pin for [`crate::enet::ClientTrust::PinSha256`].
    pub fn cert_sha256(&self) -> [u8; 32] {
        self.leaf_sha256
    }

    /// The certificates, DER, leaf first.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The key as a standard PKCS#8 `PRIVATE KEY` PEM block.
    pub fn key_pem(&self) -> String {
        pem_block("PRIVATE KEY", &self.key_pkcs8)
    }

    pub(crate) fn key_pkcs8(&self) -> &[u8] {
        &self.key_pkcs8
    }
}

impl fmt::Debug for ServerIdentity {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("certificates", &self.chain.len())
            .field("sha256", &hex(&self.leaf_sha256))
            .finish_non_exhaustive()
    }
}

/// Lowercase hex, for logging pins.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The crypto provider every DTLS object of this crate uses (ring).
pub(crate) fn provider() -> Result<std::sync::Arc<dyn rtc_crypto::RTCCryptoProvider>, TransportError> {
    rtc_crypto::default_provider().map_err(|e| TransportError::TlsConfig(format!("no crypto provider: {e}")))
}

fn io_error(context: String, source: io::Error) -> TransportError {
    TransportError::TlsConfig(format!("{context}: {source}"))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn warn_if_key_readable_by_others(key: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(key)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(key = %key.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "DTLS key file is readable by group or others; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = key;
}

/// Wraps a SEC1 `ECPrivateKey` for P-256 in a PKCS#8 `PrivateKeyInfo` (RFC 5208, RFC 5915).
/// A key of another curve still fails afterwards, when the provider imports it.
fn p256_sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALGORITHM: [u8; 21] = [
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x03, 0x01, 0x07,
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&ALGORITHM);
    body.push(0x04);
    der_length(sec1.len(), &mut body);
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_length(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk.first().copied().unwrap_or(0), chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_round_trips_through_pem() {
        let id = ServerIdentity::self_signed(&DEFAULT_CERT_NAMES).expect("generate");
        let back = ServerIdentity::from_pem(id.cert_pem().as_bytes(), id.key_pem().as_bytes()).expect("parse");
        assert_eq!(back.cert_sha256(), id.cert_sha256());
        assert_eq!(back.chain_der(), id.chain_der());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = ServerIdentity::self_signed(&["localhost"]).expect("generate");
        let b = ServerIdentity::self_signed(&["localhost"]).expect("generate");
        let err = ServerIdentity::from_pem(a.cert_pem().as_bytes(), b.key_pem().as_bytes()).map(|_| ());
        assert!(matches!(err, Err(TransportError::TlsConfig(m)) if m.contains("does not match")));
    }

    #[test]
    fn sec1_keys_are_accepted() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        // rcgen writes PKCS#8; dig the SEC1 ECPrivateKey out of it (the OCTET STRING at the end)
        // and present it the way `openssl ecparam -genkey` would.
        let pkcs8 = key.serialize_der();
        let sec1 = sec1_from_pkcs8(&pkcs8).expect("sec1 inside pkcs8");
        assert_eq!(p256_sec1_to_pkcs8(sec1), pkcs8);
        let pem = pem_block("EC PRIVATE KEY", sec1);
        ServerIdentity::from_pem(cert.pem().as_bytes(), pem.as_bytes()).expect("sec1 key loads");
    }

    fn sec1_from_pkcs8(pkcs8: &[u8]) -> Option<&[u8]> {
        // 30 len | 02 01 00 | algorithm (21) | 04 len sec1
        let header = if pkcs8.get(1)? & 0x80 != 0 { 2 + usize::from(pkcs8.get(1)? & 0x7f) } else { 2 };
        let rest = pkcs8.get(header + 3 + 21..)?;
        let (len, skip) = if rest.get(1)? & 0x80 != 0 {
            let n = usize::from(rest.get(1)? & 0x7f);
            (rest.get(2..2 + n)?.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)), 2 + n)
        } else {
            (usize::from(*rest.get(1)?), 2)
        };
        rest.get(skip..skip + len)
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, expected) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn load_or_create_creates_once_then_loads_the_same_identity() {
        let dir = std::env::temp_dir().join(format!("tavern-cert-test-{}-{}", std::process::id(), rand::random::<u64>()));
        let created = ServerIdentity::load_or_create(&dir).expect("create");
        let loaded = ServerIdentity::load_or_create(&dir).expect("load");
        assert_eq!(created.cert_sha256(), loaded.cert_sha256());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_FILE)).expect("key file").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        fs::remove_file(dir.join(KEY_FILE)).expect("remove key");
        assert!(matches!(ServerIdentity::load_or_create(&dir), Err(TransportError::TlsConfig(_))));
        let _ = fs::remove_dir_all(&dir);
    }
}
