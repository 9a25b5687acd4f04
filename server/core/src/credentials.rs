//! Upstream credentials at rest: sealed with AES-256-GCM under a key shared by the
//! operator (which seals what it reads from a Kubernetes Secret) and the replicas
//! (which open it when they load the `upstream_sources` rows). See
//! `docs/operator.md` § Credentials.
//!
//! The key comes from `ORCHARD_CREDENTIALS_KEY` (32 bytes, base64) or
//! `ORCHARD_CREDENTIALS_KEY_FILE` (a file holding the same, as a mounted Secret
//! does). A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag); the source
//! name is the associated data, so a sealed value copied onto another row does not
//! open.

use std::fmt;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};

const PREFIX: &str = "v1:";

/// The key that seals and opens upstream credentials. Never printed.
#[derive(Clone)]
pub struct CredentialsKey {
    bytes: [u8; 32],
}

impl fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialsKey(redacted)")
    }
}

/// What a sealed value holds: the username (basic) and the password or token.
#[derive(Serialize, Deserialize)]
struct Plain {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    secret: String,
}

/// Opened credentials.
pub struct OpenedCredentials {
    pub username: Option<String>,
    pub secret: SecretString,
}

impl fmt::Debug for OpenedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedCredentials")
            .field("username", &self.username)
            .field("secret", &"redacted")
            .finish()
    }
}

impl CredentialsKey {
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let raw = B64
            .decode(text.trim())
            .map_err(|_| "is not base64".to_string())?;
        let bytes: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
            format!(
                "decodes to {} bytes; it must be 32 (`openssl rand -base64 32`)",
                v.len()
            )
        })?;
        Ok(CredentialsKey { bytes })
    }

    /// `ORCHARD_CREDENTIALS_KEY`, else the file `ORCHARD_CREDENTIALS_KEY_FILE`, else none.
    pub fn from_env(env: &Env<'_>) -> Result<Option<Self>, ConfigError> {
        if let Some(v) = env.var("ORCHARD_CREDENTIALS_KEY") {
            return Self::from_base64(&v)
                .map(Some)
                .map_err(|message| ConfigError {
                    var: "ORCHARD_CREDENTIALS_KEY",
                    message,
                });
        }
        const FILE: &str = "ORCHARD_CREDENTIALS_KEY_FILE";
        if let Some(path) = env.var(FILE) {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                var: FILE,
                message: format!("cannot read {path}: {e}"),
            })?;
            return Self::from_base64(&text).map(Some).map_err(|m| ConfigError {
                var: FILE,
                message: format!("{path} {m}"),
            });
        }
        Ok(None)
    }

    fn aead(&self) -> RandomizedNonceKey {
        RandomizedNonceKey::new(&AES_256_GCM, &self.bytes)
            .expect("a 32-byte key is valid for AES-256-GCM")
    }

    /// Seals `secret` (and the username) for the source `source`.
    pub fn seal(&self, source: &str, username: Option<&str>, secret: &SecretString) -> String {
        let plain = Plain {
            username: username.map(str::to_string),
            secret: secret.expose_secret().to_string(),
        };
        let mut buf = serde_json::to_vec(&plain).expect("credentials serialise");
        let nonce = self
            .aead()
            .seal_in_place_append_tag(Aad::from(source.as_bytes()), &mut buf)
            .expect("AES-GCM sealing does not fail");
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Opens a value sealed for `source`. The error never contains secret material.
    pub fn open(&self, source: &str, sealed: &str) -> Result<OpenedCredentials, String> {
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or("sealed credentials have an unknown format")?;
        let mut raw = B64
            .decode(body)
            .map_err(|_| "sealed credentials are not base64")?;
        if raw.len() < NONCE_LEN + 16 {
            return Err("sealed credentials are truncated".into());
        }
        let nonce = Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]).map_err(|_| "bad nonce")?;
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(source.as_bytes()), &mut raw[NONCE_LEN..])
            .map_err(|_| "sealed credentials do not open with ORCHARD_CREDENTIALS_KEY (another key, or sealed for another source)")?;
        let plain: Plain = serde_json::from_slice(plain)
            .map_err(|_| "sealed credentials hold no valid document")?;
        Ok(OpenedCredentials {
            username: plain.username,
            secret: SecretString::from(plain.secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> CredentialsKey {
        CredentialsKey::from_base64(&B64.encode([b; 32])).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = key(7);
        let s = k.seal("internal", Some("ci"), &SecretString::from("hunter2"));
        assert!(s.starts_with("v1:") && !s.contains("hunter2") && !s.contains("ci\""));
        let o = k.open("internal", &s).unwrap();
        assert_eq!(
            (o.username.as_deref(), o.secret.expose_secret()),
            (Some("ci"), "hunter2")
        );
        // Random nonces: sealing twice differs.
        assert_ne!(
            s,
            k.seal("internal", Some("ci"), &SecretString::from("hunter2"))
        );
        // Bound to the source name and the key.
        assert!(k.open("other", &s).is_err());
        assert!(key(8).open("internal", &s).is_err());
        let e = key(8).open("internal", &s).unwrap_err();
        assert!(!e.contains("hunter2"));
        // Tampering and garbage.
        let mut t = s.clone();
        t.replace_range(10..11, if &s[10..11] == "A" { "B" } else { "A" });
        assert!(k.open("internal", &t).is_err());
        assert!(k.open("internal", "v1:AAAA").is_err());
        assert!(k.open("internal", "plain").is_err());
    }

    #[test]
    fn key_from_env() {
        let good = B64.encode([1u8; 32]);
        let env = Env::from_fn(|k| (k == "ORCHARD_CREDENTIALS_KEY").then(|| good.clone()));
        assert!(CredentialsKey::from_env(&env).unwrap().is_some());
        let env = Env::from_fn(|k| (k == "ORCHARD_CREDENTIALS_KEY").then(|| B64.encode([1u8; 16])));
        let e = CredentialsKey::from_env(&env).unwrap_err();
        assert!(e.message.contains("16 bytes"), "{e}");
        assert!(CredentialsKey::from_env(&Env::from_fn(|_| None))
            .unwrap()
            .is_none());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, format!("{good}\n")).unwrap();
        let ps = p.to_string_lossy().to_string();
        let env = Env::from_fn(|k| (k == "ORCHARD_CREDENTIALS_KEY_FILE").then(|| ps.clone()));
        assert!(CredentialsKey::from_env(&env).unwrap().is_some());
        assert_eq!(format!("{:?}", key(1)), "CredentialsKey(redacted)");
    }
}
