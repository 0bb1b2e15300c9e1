//! Console and portal sessions and partners' one-time sign-in links, in
//! the `sessions` tree, each under the SHA-256 of its secret (the secret
//! itself is never stored): `s` + hash → session, `l` + hash → sign-in link.

use super::{from_json, to_json, Store, StoreError};
use crate::access::sessions::{Session, SigninLink};

fn key(tag: u8, hash: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + hash.len());
    k.push(tag);
    k.extend_from_slice(hash.as_bytes());
    k
}

impl Store {
    /// Stores a session as it is now; durable at the next flush.
    pub fn stage_session(&self, hash: &str, s: &Session) -> Result<(), StoreError> {
        self.with(|t| {
            t.sessions.insert(key(b's', hash), to_json(s))?;
            Ok(())
        })
    }

    /// A session by the hash of its id.
    pub fn session(&self, hash: &str) -> Result<Option<Session>, StoreError> {
        self.with(|t| {
            let k = key(b's', hash);
            t.sessions.get(&k)?.map(|v| from_json(&k, &v)).transpose()
        })
    }

    /// Ends a session (sign-out, expiry); durable at the next flush.
    pub fn remove_session(&self, hash: &str) -> Result<(), StoreError> {
        self.with(|t| {
            t.sessions.remove(key(b's', hash))?;
            Ok(())
        })
    }

    /// Every session with the hash of its id (for sweeping expired ones).
    pub fn sessions(&self) -> Result<Vec<(String, Session)>, StoreError> {
        self.with(|t| {
            let mut out = Vec::new();
            for kv in t.sessions.scan_prefix([b's']) {
                let (k, v) = kv?;
                let hash = String::from_utf8_lossy(&k[1..]).into_owned();
                out.push((hash, from_json(&k, &v)?));
            }
            Ok(out)
        })
    }

    /// Stores a new sign-in link durably.
    pub fn put_signin_link(&self, hash: &str, l: &SigninLink) -> Result<(), StoreError> {
        self.with(|t| {
            t.sessions.insert(key(b'l', hash), to_json(l))?;
            t.db.flush()?;
            Ok(())
        })
    }

    /// Takes a sign-in link out, durably: of two requests with the same
    /// link, one gets it.
    pub fn take_signin_link(&self, hash: &str) -> Result<Option<SigninLink>, StoreError> {
        self.with(|t| {
            let k = key(b'l', hash);
            let Some(v) = t.sessions.remove(&k)? else {
                return Ok(None);
            };
            t.db.flush()?;
            Ok(Some(from_json(&k, &v)?))
        })
    }

    /// A sign-in link, without using it up.
    pub fn signin_link(&self, hash: &str) -> Result<Option<SigninLink>, StoreError> {
        self.with(|t| {
            let k = key(b'l', hash);
            t.sessions.get(&k)?.map(|v| from_json(&k, &v)).transpose()
        })
    }
}
