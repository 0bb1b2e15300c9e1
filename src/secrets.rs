//! Secrets kept as files in the data dir, readable by the owner only
//! (mode 0600): the admin token, the token keyring and the key that hashes
//! visitor IPs. Each is generated on first start and reused afterwards.

use crate::config::ConfiguredKey;
use crate::id::{random_base62, random_bytes};
use crate::token::{Keyring, SigningKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::hmac;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File names inside the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Keyring file name.
pub const KEYRING_FILE: &str = "keyring.json";
/// IP-hash key file name.
pub const IP_KEY_FILE: &str = "ip-hash-key";

/// A secret file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file, fsync,
/// rename), so a crash never leaves half a secret.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), SecretError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Reads the file, or creates it with `make()` if it does not exist.
fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<(Vec<u8>, bool), SecretError> {
    match std::fs::read(path) {
        Ok(b) => Ok((b, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let b = make();
            write_private(path, &b)?;
            Ok((b, true))
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// Checks bearer tokens against the admin token in constant time.
pub struct AdminAuth {
    /// Random per-process key; both sides are MACed under it.
    key: hmac::Key,
    /// MAC of the real token.
    tag: hmac::Tag,
}

impl AdminAuth {
    /// Guards `token`.
    pub fn new(token: &str, rng: &SystemRandom) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>(rng));
        let tag = hmac::sign(&key, token.as_bytes());
        Self { key, tag }
    }

    /// Whether `candidate` is the admin token.
    pub fn check(&self, candidate: &str) -> bool {
        hmac::verify(&self.key, candidate.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

/// The admin token: the configured one, or the one in the data dir
/// (generated if missing). Returns the token and, when it came from a file,
/// that file's path.
pub fn admin_token(
    configured: Option<&str>,
    data_dir: &Path,
    rng: &SystemRandom,
) -> Result<(String, Option<PathBuf>), SecretError> {
    if let Some(t) = configured {
        return Ok((t.to_string(), None));
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let (bytes, _) = load_or_create(&path, || random_base62(rng, 43).into_bytes())?;
    let token = String::from_utf8(bytes)
        .map_err(|_| SecretError::Corrupt {
            path: path.clone(),
            reason: "is not UTF-8".into(),
        })?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(SecretError::Corrupt {
            path,
            reason: "holds fewer than 16 characters".into(),
        });
    }
    Ok((token, Some(path)))
}

/// The key that turns visitor IPs into stable pseudonyms.
pub fn ip_hash_key(data_dir: &Path, rng: &SystemRandom) -> Result<hmac::Key, SecretError> {
    let path = data_dir.join(IP_KEY_FILE);
    let (bytes, _) = load_or_create(&path, || random_bytes::<32>(rng).to_vec())?;
    if bytes.len() < 32 {
        return Err(SecretError::Corrupt {
            path,
            reason: "holds fewer than 32 bytes".into(),
        });
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: u32,
    secret: String,
    created_at: i64,
    retired: bool,
}

/// Where the keyring comes from.
pub enum KeyringSource {
    /// Keys from configuration; they cannot be changed at run time.
    Configured,
    /// Keys in this file, rewritten on rotation and retirement.
    File(PathBuf),
}

/// Loads the keyring from config, or from the data dir (creating a first key).
pub fn keyring(
    configured: &[ConfiguredKey],
    data_dir: &Path,
    rng: &SystemRandom,
    now_s: i64,
) -> Result<(Keyring, KeyringSource), SecretError> {
    if !configured.is_empty() {
        let keys = configured
            .iter()
            .map(|k| SigningKey::new(k.id, k.secret.clone(), 0, k.retired))
            .collect();
        let ring = Keyring::new(keys).expect("config validation requires an active key");
        return Ok((ring, KeyringSource::Configured));
    }
    let path = data_dir.join(KEYRING_FILE);
    let (bytes, _) = load_or_create(&path, || {
        let first = Keyring::new(vec![SigningKey::new(
            1,
            random_bytes::<32>(rng).to_vec(),
            now_s,
            false,
        )])
        .expect("one active key");
        encode_keyring(&first)
    })?;
    let ring = decode_keyring(&bytes).map_err(|reason| SecretError::Corrupt {
        path: path.clone(),
        reason,
    })?;
    Ok((ring, KeyringSource::File(path)))
}

/// A keyring from its file form.
pub fn decode_keyring(bytes: &[u8]) -> Result<Keyring, String> {
    let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for k in file.keys {
        let secret = B64
            .decode(&k.secret)
            .map_err(|_| format!("key {} is not base64url", k.id))?;
        keys.push(SigningKey::new(k.id, secret, k.created_at, k.retired));
    }
    Keyring::new(keys).ok_or_else(|| "has no active key".into())
}

/// The keyring's file form.
pub fn encode_keyring(ring: &Keyring) -> Vec<u8> {
    let file = KeyFile {
        keys: ring
            .keys()
            .iter()
            .map(|k| KeyEntry {
                id: k.id,
                secret: B64.encode(&k.secret),
                created_at: k.created_at,
                retired: k.retired,
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&file).expect("keyring serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let rng = SystemRandom::new();
        let (t1, path) = admin_token(None, dir.path(), &rng).unwrap();
        let (t2, _) = admin_token(None, dir.path(), &rng).unwrap();
        assert_eq!(t1, t2);
        let mode = std::fs::metadata(path.unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let (ring, _) = keyring(&[], dir.path(), &rng, 5).unwrap();
        let (again, _) = keyring(&[], dir.path(), &rng, 6).unwrap();
        assert_eq!(ring.keys()[0].secret, again.keys()[0].secret);
        let mode = std::fs::metadata(dir.path().join(KEYRING_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn admin_auth_accepts_only_the_token() {
        let rng = SystemRandom::new();
        let a = AdminAuth::new("s3cret-token-0123456789", &rng);
        assert!(a.check("s3cret-token-0123456789"));
        assert!(!a.check("s3cret-token-012345678"));
        assert!(!a.check(""));
    }
}
