//! Signing keys with ids: the active key signs, previous keys still verify, so keys rotate without
//! logging anyone out. Also the key file the embedded default creates on first start.
//!
//! Rotation across a cluster is two steps: first deploy the new key as a *previous* (verify-only)
//! key everywhere, then make it active. A token signed with a key that some process does not hold
//! yet would otherwise be rejected there as [`TokenError::UnknownKey`].

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::TokenError;

/// The shortest secret accepted: 256 bits, the output size of the HMAC.
pub const MIN_SECRET_LEN: usize = 32;

/// The longest key id accepted; ids travel in every token.
pub const MAX_KID_LEN: usize = 64;

/// Domain separation: join tokens are MACed with a key derived from the secret, so a join token
/// and a session token can never be confused even though one secret backs both.
const JOIN_KEY_LABEL: &[u8] = b"tavern/join-token/v1";

/// One secret and the id tokens name it by.
#[derive(Clone)]
pub struct SigningKey {
    /// Short printable id (`[A-Za-z0-9._-]`, at most 64 bytes) carried in every token.
    pub kid: String,
    /// At least [`MIN_SECRET_LEN`] bytes.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("SigningKey").field("kid", &self.kid).field("secret", &"<redacted>").finish()
    }
}

impl SigningKey {
    /// A random 256-bit secret with a random id.
    pub fn generate() -> SigningKey {
        let mut secret = vec![0u8; MIN_SECRET_LEN];
        OsRng.fill_bytes(&mut secret);
        let mut id = [0u8; 6];
        OsRng.fill_bytes(&mut id);
        SigningKey { kid: format!("k{}", hex(&id)), secret }
    }

    /// A key from its id and its secret in base64 (standard or url-safe, padded or not).
    pub fn from_base64(kid: &str, secret_b64: &str) -> Result<SigningKey, TokenError> {
        let secret = decode_secret(secret_b64.trim())
            .ok_or_else(|| TokenError::InvalidKey(format!("secret of key {kid:?} is not base64")))?;
        let key = SigningKey { kid: kid.to_owned(), secret };
        key.check()?;
        Ok(key)
    }

    /// The secret in standard base64, as the key file and the config hold it.
    pub fn secret_base64(&self) -> String {
        STANDARD.encode(&self.secret)
    }

    fn check(&self) -> Result<(), TokenError> {
        check_kid(&self.kid)?;
        if self.secret.len() < MIN_SECRET_LEN {
            return Err(TokenError::KeyTooShort { kid: self.kid.clone(), len: self.secret.len() });
        }
        Ok(())
    }
}

/// The keys a process signs and verifies with. Cheap to clone: the keys are shared.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    active: String,
    keys: HashMap<String, Entry>,
    /// Verify-only key ids, oldest first, so the key file keeps a stable order.
    previous: Vec<String>,
}

/// One key with everything derived from it computed once, not per token.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) key: SigningKey,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// HMAC state already keyed with the join key; cloned per token.
    pub(crate) join_mac: Hmac<Sha256>,
}

impl Entry {
    fn new(key: SigningKey) -> Result<Entry, TokenError> {
        key.check()?;
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&key.secret)
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        derive.update(JOIN_KEY_LABEL);
        let join_key = derive.finalize().into_bytes();
        let join_mac = <Hmac<Sha256> as Mac>::new_from_slice(&join_key)
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        Ok(Entry {
            encoding: EncodingKey::from_secret(&key.secret),
            decoding: DecodingKey::from_secret(&key.secret),
            join_mac,
            key,
        })
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.inner.active)
            .field("previous", &self.inner.previous)
            .finish()
    }
}

impl Keyring {
    /// A keyring whose `active` key signs and whose `previous` keys only verify.
    pub fn new(active: SigningKey, previous: Vec<SigningKey>) -> Result<Keyring, TokenError> {
        let active_kid = active.kid.clone();
        let mut keys = HashMap::new();
        keys.insert(active_kid.clone(), Entry::new(active)?);
        let mut previous_ids = Vec::with_capacity(previous.len());
        for key in previous {
            let kid = key.kid.clone();
            if keys.contains_key(&kid) {
                return Err(TokenError::InvalidKey(format!("key id {kid:?} appears twice")));
            }
            keys.insert(kid.clone(), Entry::new(key)?);
            previous_ids.push(kid);
        }
        Ok(Keyring { inner: Arc::new(Inner { active: active_kid, keys, previous: previous_ids }) })
    }

    /// A keyring with one random 256-bit key under a random id.
    pub fn generate() -> Keyring {
        let key = SigningKey::generate();
        let kid = key.kid.clone();
        // A generated key has a valid id and a full-length secret, and the HMAC takes any key
        // length, so building its entry cannot fail.
        let entry = Entry::new(key).expect("a generated key is always valid");
        Keyring { inner: Arc::new(Inner { active: kid.clone(), keys: HashMap::from([(kid, entry)]), previous: vec![] }) }
    }

    /// The embedded default: reads the key file at `path`, or creates it with a generated key
    /// (mode 0600, parent folders created) so a restart keeps every issued token valid.
    ///
    /// Creation is atomic: the key is written to a temporary file and linked into place, so a
    /// crash never leaves a half-written key file and two processes starting at once end up with
    /// the same key.
    pub fn load_or_create(path: &Path) -> Result<Keyring, TokenError> {
        match std::fs::read_to_string(path) {
            Ok(text) => return Keyring::from_file_text(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_file_err(path, e)),
        }
        let ring = Keyring::generate();
        match ring.write_new(path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), kid = ring.active_kid(), "created signing key file");
                Ok(ring)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|e| key_file_err(path, e))?;
                Keyring::from_file_text(path, &text)
            }
            Err(e) => Err(key_file_err(path, e)),
        }
    }

    /// Writes every key to `path` (mode 0600), replacing the file atomically; for operators who
    /// rotate the embedded key file.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let tmp = self.write_temp(path).map_err(|e| key_file_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            key_file_err(path, e)
        })
    }

    /// Makes `new_active` the signing key; the old active key stays as a verify-only key.
    ///
    /// Differs from the original sketch by returning a `Result`: a short secret or an id already
    /// on the ring is refused instead of silently accepted.
    pub fn rotate(&mut self, new_active: SigningKey) -> Result<(), TokenError> {
        if self.inner.keys.contains_key(&new_active.kid) {
            return Err(TokenError::InvalidKey(format!("key id {:?} is already on the keyring", new_active.kid)));
        }
        let kid = new_active.kid.clone();
        let entry = Entry::new(new_active)?;
        let inner = Arc::make_mut(&mut self.inner);
        let old = std::mem::replace(&mut inner.active, kid.clone());
        inner.previous.push(old);
        inner.keys.insert(kid, entry);
        Ok(())
    }

    /// Drops a verify-only key: tokens it signed now fail with [`TokenError::UnknownKey`].
    /// The active key cannot be retired; returns whether a key was removed.
    pub fn retire(&mut self, kid: &str) -> bool {
        if kid == self.inner.active || !self.inner.keys.contains_key(kid) {
            return false;
        }
        let inner = Arc::make_mut(&mut self.inner);
        inner.keys.remove(kid);
        inner.previous.retain(|k| k != kid);
        true
    }

    /// The id of the key that signs.
    pub fn active_kid(&self) -> &str {
        &self.inner.active
    }

    /// Every key id, the active one first.
    pub fn kids(&self) -> Vec<&str> {
        std::iter::once(self.inner.active.as_str()).chain(self.inner.previous.iter().map(String::as_str)).collect()
    }

    /// Whether tokens naming `kid` can be verified.
    pub fn contains(&self, kid: &str) -> bool {
        self.inner.keys.contains_key(kid)
    }

    pub(crate) fn active(&self) -> &Entry {
        // `new`, `generate` and `rotate` always insert the active key, and `retire` refuses it.
        self.inner.keys.get(&self.inner.active).expect("the active key is always on the keyring")
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&Entry> {
        self.inner.keys.get(kid)
    }

    fn from_file_text(path: &Path, text: &str) -> Result<Keyring, TokenError> {
        warn_if_readable_by_others(path);
        let file: KeyFile = serde_json::from_str(text).map_err(|e| key_file_err(path, e))?;
        file.into_keyring().map_err(|e| key_file_err(path, e))
    }

    fn to_file(&self) -> KeyFile {
        let entry = |kid: &str| {
            self.inner.keys.get(kid).map(|e| KeyFileEntry { kid: kid.to_owned(), secret: e.key.secret_base64() })
        };
        KeyFile { active: self.inner.active.clone(), keys: self.kids().into_iter().filter_map(entry).collect() }
    }

    /// Writes the key file to a fresh temporary file beside `path` and returns its path.
    fn write_temp(&self, path: &Path) -> std::io::Result<std::path::PathBuf> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut nonce = [0u8; 8];
        OsRng.fill_bytes(&mut nonce);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.tmp", hex(&nonce)));
        let tmp = path.with_file_name(name);
        let text = serde_json::to_string_pretty(&self.to_file()).map_err(std::io::Error::other)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let result = opts.open(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn write_new(&self, path: &Path) -> std::io::Result<()> {
        let tmp = self.write_temp(path)?;
        // A hard link never replaces an existing file, unlike rename.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        linked
    }
}

/// The key file: `{"active": "kid", "keys": [{"kid": "…", "secret": "base64"}]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    active: String,
    keys: Vec<KeyFileEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    kid: String,
    secret: String,
}

impl KeyFile {
    fn into_keyring(self) -> Result<Keyring, TokenError> {
        keyring_from_parts(&self.active, self.keys.iter().map(|k| (k.kid.as_str(), k.secret.as_str())))
    }
}

/// Builds a keyring from `(kid, base64 secret)` pairs and the id of the active one; shared by the
/// key file and the service config.
pub fn keyring_from_parts<'a>(
    active_kid: &str,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Keyring, TokenError> {
    let mut active = None;
    let mut previous = Vec::new();
    for (kid, secret) in keys {
        let key = SigningKey::from_base64(kid, secret)?;
        if kid == active_kid {
            if active.is_some() {
                return Err(TokenError::InvalidKey(format!("key id {kid:?} appears twice")));
            }
            active = Some(key);
        } else {
            previous.push(key);
        }
    }
    let active =
        active.ok_or_else(|| TokenError::InvalidKey(format!("active key {active_kid:?} is not among the keys")))?;
    Keyring::new(active, previous)
}

fn check_kid(kid: &str) -> Result<(), TokenError> {
    let ok = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::InvalidKey(format!("key id {kid:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -")))
    }
}

fn decode_secret(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .ok()
        .or_else(|| URL_SAFE_NO_PAD.decode(s).ok())
        .or_else(|| base64::engine::general_purpose::URL_SAFE.decode(s).ok())
        .or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s).ok())
}

fn key_file_err(path: &Path, e: impl std::fmt::Display) -> TokenError {
    TokenError::KeyFile { path: path.display().to_string(), reason: e.to_string() }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "signing key file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
