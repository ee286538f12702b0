//! Keys and secrets: the master key, stream-key encryption (XChaCha20-Poly1305), password hashes (argon2id).

use std::path::Path;

use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

/// The one secret an installation keeps; every other key is derived from it, so rotating it
/// is one operation and no two purposes share a key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut k);
        Self(k)
    }

    /// Parses the base64 form used in config and env (`CASTYARD_ENCRYPTION_KEY`).
    pub fn from_base64(s: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(s.trim())
            .context("encryption key is not valid base64")?;
        let k: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("encryption key must decode to exactly 32 bytes"))?;
        Ok(Self(k))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Embedded mode: read the key from the data directory, creating it (mode 0600) on first run.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_base64(&s).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_private(path, key.to_base64().as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(purpose, &mut out)
            .expect("32 bytes is a valid HKDF length");
        out
    }

    pub fn stream_key_cipher(&self) -> StreamKeyCipher {
        StreamKeyCipher(XChaCha20Poly1305::new(
            &self.derive(b"castyard stream keys v1").into(),
        ))
    }

    pub fn jwt_secret(&self) -> [u8; 32] {
        self.derive(b"castyard jwt v1")
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Encrypts stream keys at rest. The row id is bound as associated data, so a ciphertext
/// copied onto another destination row fails to decrypt instead of leaking a key there.
#[derive(Clone)]
pub struct StreamKeyCipher(XChaCha20Poly1305);

impl StreamKeyCipher {
    pub fn encrypt(&self, row_id: &str, key: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: key.as_bytes(),
                    aad: row_id.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory input");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn decrypt(&self, row_id: &str, sealed: &str) -> anyhow::Result<String> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .context("sealed key is not base64")?;
        anyhow::ensure!(raw.len() > 24, "sealed key is too short");
        let (nonce, ct) = raw.split_at(24);
        let pt = self
            .0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: row_id.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("stream key failed to decrypt (wrong key or row)"))?;
        Ok(String::from_utf8(pt)?)
    }
}

/// What the API shows of a stream key: never more than its last four characters.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "••••".into();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("••••{tail}")
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random token for refresh cookies, and its SHA-256 for storage (a stolen database
/// cannot be replayed as sessions).
pub fn new_token() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut OsRng, &mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_round_trip_and_are_bound_to_their_row() {
        let cipher = MasterKey::generate().stream_key_cipher();
        let sealed = cipher.encrypt("row-1", "live_abcdef_1234");
        assert!(!sealed.contains("abcdef"));
        assert_eq!(
            cipher.decrypt("row-1", &sealed).unwrap(),
            "live_abcdef_1234"
        );
        assert!(cipher.decrypt("row-2", &sealed).is_err());
        let other = MasterKey::generate().stream_key_cipher();
        assert!(other.decrypt("row-1", &sealed).is_err());
    }

    #[test]
    fn masks_show_at_most_the_tail() {
        assert_eq!(mask("xxxx-yyyy-zzzz-1234"), "••••1234");
        assert_eq!(mask("short"), "••••");
    }

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn master_key_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let a = MasterKey::load_or_create(&p).unwrap();
        let b = MasterKey::load_or_create(&p).unwrap();
        assert_eq!(a.to_base64(), b.to_base64());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(MasterKey::from_base64("dG9vIHNob3J0").is_err());
    }
}
