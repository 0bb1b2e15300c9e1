//! Console and portal sessions, and partners' one-time sign-in links.
//!
//! A session's id (the cookie's value) and a sign-in link's secret are 32
//! random base62 characters; only their SHA-256 is stored, so a copy of
//! the database opens no session. A session ends when unused for the idle
//! time, at its absolute end, at sign-out, or as soon as the API key it
//! was opened with is revoked or expires.

use super::{sha256_hex, Keys, Principal, Role};
use crate::id::random_base62;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

/// A signed-in person, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub role: Role,
    /// A partner's session: the partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// The API key signed in with; `None` for the admin token and for a
    /// partner's sign-in link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Who this is, for the page header and audit lines ("admin token",
    /// the key's name, "sign-in link").
    pub who: String,
    /// The token every form of this session carries.
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl Session {
    /// Who is asking, for the API's rules.
    pub fn principal(&self) -> Principal {
        Principal {
            role: self.role,
            partner_id: self.partner_id.clone(),
            key_id: self.key_id.clone(),
        }
    }
}

/// A one-time sign-in link to a partner's portal, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigninLink {
    pub partner_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Unused for this long: signed out.
    pub idle: Duration,
    /// This long after sign-in: signed out.
    pub absolute: Duration,
}

/// Last-seen times are written at most this often (a page view does not
/// rewrite its session each time).
const TOUCH_EVERY_S: i64 = 60;

/// Sessions and sign-in links.
pub struct Sessions {
    store: Store,
    rng: SystemRandom,
    lifetimes: Lifetimes,
}

impl Sessions {
    pub fn new(store: Store, lifetimes: Lifetimes) -> Self {
        Self {
            store,
            rng: SystemRandom::new(),
            lifetimes,
        }
    }

    /// Opens a session for `p`; returns its id (the cookie's value).
    /// Blocking.
    pub fn start(
        &self,
        p: &Principal,
        who: String,
        now: DateTime<Utc>,
    ) -> Result<(String, Session), StoreError> {
        let id = random_base62(&self.rng, 32);
        let s = Session {
            role: p.role,
            partner_id: p.partner_id.clone(),
            key_id: p.key_id.clone(),
            who,
            csrf: random_base62(&self.rng, 32),
            created_at: now,
            last_seen_at: now,
        };
        self.store.stage_session(&sha256_hex(&id), &s)?;
        self.store.flush()?;
        Ok((id, s))
    }

    /// The live session with this id, touched; `None` (and the session
    /// removed) when it has expired or its key no longer opens anything.
    /// Blocking.
    pub fn resume(
        &self,
        id: &str,
        keys: &Keys,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let hash = sha256_hex(id);
        let Some(mut s) = self.store.session(&hash)? else {
            return Ok(None);
        };
        if !self.live(&s, keys, now) {
            self.store.remove_session(&hash)?;
            return Ok(None);
        }
        if (now - s.last_seen_at).num_seconds() >= TOUCH_EVERY_S {
            s.last_seen_at = now;
            self.store.stage_session(&hash, &s)?;
        }
        Ok(Some(s))
    }

    fn live(&self, s: &Session, keys: &Keys, now: DateTime<Utc>) -> bool {
        let in_time = now < s.last_seen_at + self.lifetimes.idle
            && now < s.created_at + self.lifetimes.absolute;
        let key_live = s
            .key_id
            .as_ref()
            .is_none_or(|k| keys.get(k).is_some_and(|k| k.live(now)));
        in_time && key_live
    }

    /// Signs out. Blocking.
    pub fn end(&self, id: &str) -> Result<(), StoreError> {
        self.store.remove_session(&sha256_hex(id))?;
        self.store.flush()
    }

    /// Removes every session past its end; returns how many. Blocking.
    pub fn sweep(&self, keys: &Keys, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut n = 0;
        for (hash, s) in self.store.sessions()? {
            if !self.live(&s, keys, now) {
                self.store.remove_session(&hash)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// A new one-time sign-in link for a partner's portal; returns its
    /// secret (for the URL) and the link. Blocking.
    pub fn new_signin_link(
        &self,
        partner_id: &str,
        valid_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<(String, SigninLink), StoreError> {
        let secret = random_base62(&self.rng, 32);
        let l = SigninLink {
            partner_id: partner_id.to_string(),
            created_at: now,
            expires_at: now + valid_for,
        };
        self.store.put_signin_link(&sha256_hex(&secret), &l)?;
        Ok((secret, l))
    }

    /// The sign-in link with this secret, if still usable (not used up).
    pub fn peek_signin_link(
        &self,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SigninLink>, StoreError> {
        Ok(self
            .store
            .signin_link(&sha256_hex(secret))?
            .filter(|l| now < l.expires_at))
    }

    /// Uses a sign-in link up: the partner's session is opened with it by
    /// the caller. `None` if unknown, used or expired. Blocking.
    pub fn use_signin_link(
        &self,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SigninLink>, StoreError> {
        Ok(self
            .store
            .take_signin_link(&sha256_hex(secret))?
            .filter(|l| now < l.expires_at))
    }
}

/// The principal of a partner signed in through a sign-in link.
pub fn partner_principal(partner_id: &str) -> Principal {
    Principal {
        role: Role::Partner,
        partner_id: Some(partner_id.to_string()),
        key_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::ApiKey;

    fn sessions(dir: &std::path::Path) -> (Sessions, Keys) {
        let store = Store::open(dir).unwrap();
        let keys = Keys::load(store.clone()).unwrap();
        let lifetimes = Lifetimes {
            idle: Duration::minutes(30),
            absolute: Duration::hours(12),
        };
        (Sessions::new(store, lifetimes), keys)
    }

    #[test]
    fn a_session_ends_when_idle_at_its_end_or_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (s, keys) = sessions(dir.path());
        let t0 = Utc::now();
        let admin = Principal::admin_token();
        let (id, _) = s.start(&admin, "admin token".into(), t0).unwrap();
        // Busy for 11 hours: alive; past 12: ended however busy.
        let mut t = t0;
        for _ in 0..22 {
            t += Duration::minutes(30) - Duration::seconds(1);
            assert!(s.resume(&id, &keys, t).unwrap().is_some(), "at {t}");
        }
        assert!(s
            .resume(&id, &keys, t0 + Duration::hours(12))
            .unwrap()
            .is_none());
        // Idle for 30 minutes: ended.
        let (id, _) = s.start(&admin, "admin token".into(), t0).unwrap();
        assert!(s
            .resume(&id, &keys, t0 + Duration::minutes(30))
            .unwrap()
            .is_none());
        // Never seen again: the sweep removes it, and only it.
        let (idle, _) = s.start(&admin, "admin token".into(), t0).unwrap();
        let (busy, _) = s
            .start(&admin, "admin token".into(), t0 + Duration::minutes(20))
            .unwrap();
        assert_eq!(s.sweep(&keys, t0 + Duration::minutes(31)).unwrap(), 1);
        assert!(s.store.session(&sha256_hex(&idle)).unwrap().is_none());
        assert!(s
            .resume(&busy, &keys, t0 + Duration::minutes(31))
            .unwrap()
            .is_some());
        // Its key revoked: ended at once.
        let rng = SystemRandom::new();
        let (k, _) = ApiKey::new("m".into(), Role::Marketing, None, None, t0, &rng);
        keys.apply(&k).unwrap();
        let p = Principal {
            role: Role::Marketing,
            partner_id: None,
            key_id: Some(k.id.clone()),
        };
        let (id, _) = s.start(&p, "m".into(), t0).unwrap();
        assert!(s.resume(&id, &keys, t0).unwrap().is_some());
        let mut revoked = k.clone();
        revoked.revoked_at = Some(t0);
        keys.apply(&revoked).unwrap();
        assert!(s.resume(&id, &keys, t0).unwrap().is_none());
        // The id is never on disk; a made-up id opens nothing.
        assert!(s
            .resume("A".repeat(32).as_str(), &keys, t0)
            .unwrap()
            .is_none());
        assert!(s.resume("short", &keys, t0).unwrap().is_none());
    }

    #[test]
    fn a_signin_link_opens_once_and_only_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = sessions(dir.path());
        let t0 = Utc::now();
        let (secret, _) = s.new_signin_link("p_1", Duration::hours(72), t0).unwrap();
        assert!(s.peek_signin_link(&secret, t0).unwrap().is_some());
        let used = s.use_signin_link(&secret, t0).unwrap().unwrap();
        assert_eq!(used.partner_id, "p_1");
        assert!(s.use_signin_link(&secret, t0).unwrap().is_none(), "used up");
        let (late, _) = s.new_signin_link("p_1", Duration::hours(72), t0).unwrap();
        assert!(s
            .use_signin_link(&late, t0 + Duration::hours(72))
            .unwrap()
            .is_none());
    }
}
