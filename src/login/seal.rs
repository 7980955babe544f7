//! PURE: small values sealed into cookies with AES-256-GCM (aws-lc-rs). The cookie name is the
//! associated data, so a value sealed for one cookie never opens as another, and the expiry is
//! inside the ciphertext, so a client can neither read, alter nor extend what it holds.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bytes of key material a cookie key needs.
pub const KEY_BYTES: usize = 32;

/// Why a sealed value cannot be opened or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not made by this server with this key, or altered since.
    #[error("the cookie was not issued by this server or was altered")]
    Invalid,
    /// Made by this server, but past its lifetime.
    #[error("the cookie has expired")]
    Expired,
    /// Key material is too short, or the system random source failed.
    #[error("{0}")]
    Key(String),
}

/// The symmetric key every replica seals cookies with.
pub struct CookieKey(LessSafeKey);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey { .. }")
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    exp: i64,
    v: T,
}

impl CookieKey {
    /// A key from at least [`KEY_BYTES`] bytes of secret material (longer material is hashed
    /// down, so a Secret may hold any random string of that length or more).
    ///
    /// # Errors
    /// Material shorter than [`KEY_BYTES`].
    pub fn from_material(material: &[u8]) -> Result<Self, SealError> {
        if material.len() < KEY_BYTES {
            return Err(SealError::Key(format!(
                "the session key has {} bytes; at least {KEY_BYTES} are needed",
                material.len()
            )));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material);
        let key = UnboundKey::new(&AES_256_GCM, digest.as_ref())
            .map_err(|_| SealError::Key("AES-256-GCM refused the key".into()))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Fresh random key material, base64url-encoded, for storing.
    ///
    /// # Errors
    /// A failing system random source.
    pub fn generate_material() -> Result<String, SealError> {
        let mut bytes = [0u8; KEY_BYTES];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| SealError::Key("the system random source failed".into()))?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Seals `value` for the cookie `name`, valid until `expires`.
    ///
    /// # Errors
    /// A failing random source or an unserialisable value.
    pub fn seal<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        expires: Timestamp,
    ) -> Result<String, SealError> {
        let mut plain = serde_json::to_vec(&Envelope {
            exp: expires.as_second(),
            v: value,
        })
        .map_err(|e| SealError::Key(format!("cannot serialise the cookie: {e}")))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| SealError::Key("the system random source failed".into()))?;
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut plain,
            )
            .map_err(|_| SealError::Key("AES-256-GCM sealing failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value sealed for the cookie `name`, if it is authentic and unexpired at `now`.
    ///
    /// # Errors
    /// [`SealError::Invalid`] for anything altered or foreign, [`SealError::Expired`] past its
    /// lifetime.
    pub fn open<T: DeserializeOwned>(
        &self,
        name: &str,
        sealed: &str,
        now: Timestamp,
    ) -> Result<T, SealError> {
        let mut bytes = URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .map_err(|_| SealError::Invalid)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Invalid);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| SealError::Invalid)?;
        let envelope: Envelope<T> =
            serde_json::from_slice(plain).map_err(|_| SealError::Invalid)?;
        if envelope.exp <= now.as_second() {
            return Err(SealError::Expired);
        }
        Ok(envelope.v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> CookieKey {
        CookieKey::from_material(&[7u8; 32]).unwrap()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn round_trips_until_it_expires() {
        let sealed = key().seal("flow", &"hello", at(1_000)).unwrap();
        assert_eq!(
            key().open::<String>("flow", &sealed, at(999)).unwrap(),
            "hello"
        );
        assert_eq!(
            key().open::<String>("flow", &sealed, at(1_000)),
            Err(SealError::Expired)
        );
    }

    #[test]
    fn refuses_altered_foreign_or_renamed_values() {
        let sealed = key().seal("session", &"alice", at(1_000)).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            key().open::<String>("session", &tampered, at(0)),
            Err(SealError::Invalid)
        );
        assert_eq!(
            key().open::<String>("flow", &sealed, at(0)),
            Err(SealError::Invalid),
            "a session cookie must not open as a flow cookie"
        );
        let other = CookieKey::from_material(&[8u8; 32]).unwrap();
        assert_eq!(
            other.open::<String>("session", &sealed, at(0)),
            Err(SealError::Invalid)
        );
        assert_eq!(
            key().open::<String>("session", "not base64!", at(0)),
            Err(SealError::Invalid)
        );
    }

    #[test]
    fn sealed_values_are_not_readable_and_differ_each_time() {
        let a = key()
            .seal("session", &"alice@example.com", at(1_000))
            .unwrap();
        let b = key()
            .seal("session", &"alice@example.com", at(1_000))
            .unwrap();
        assert_ne!(a, b);
        let raw = URL_SAFE_NO_PAD.decode(&a).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("alice"));
    }

    #[test]
    fn short_key_material_is_refused() {
        assert!(CookieKey::from_material(&[1u8; 16]).is_err());
        let generated = CookieKey::generate_material().unwrap();
        assert!(CookieKey::from_material(generated.as_bytes()).is_ok());
    }
}
