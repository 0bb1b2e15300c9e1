//! Who may do what: API keys with a role, and the rule of every API route.
//!
//! The admin token (settings or `data_dir/admin-token`) is the bootstrap
//! admin. Keys are created by an admin (`POST /api/v1/api-keys`); a key's
//! secret (`rk_{id}_{32 random characters}`) is shown once and kept only as
//! its SHA-256, compared in constant time. A revoked or expired key is
//! refused at once.

pub mod sessions;

use crate::id::random_base62;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use hyper::Method;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, and manages keys.
    Admin,
    /// Partners and links: create, read, disable; click analytics.
    Marketing,
    /// Clicks, the fraud API, partner standing.
    Fraud,
    /// Money reads, payouts (run, confirm, CSV), exchange rates.
    Finance,
    /// Only `POST /api/v1/events`: what a billing system holds.
    Ingest,
    /// One partner's own data.
    Partner,
}

impl Role {
    /// Its name, as keys and the API spell it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Marketing => "marketing",
            Role::Fraud => "fraud",
            Role::Finance => "finance",
            Role::Ingest => "ingest",
            Role::Partner => "partner",
        }
    }
}

/// An API key as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
}

impl ApiKey {
    /// A new key and its secret (to be shown once).
    pub fn new(
        name: String,
        role: Role,
        partner_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        rng: &SystemRandom,
    ) -> (Self, String) {
        let id = format!("key_{}", random_base62(rng, 12));
        let secret = format!("rk_{}_{}", &id[4..], random_base62(rng, 32));
        let key = Self {
            id,
            name,
            role,
            partner_id,
            created_at: now,
            expires_at,
            revoked_at: None,
            secret_sha256: sha256_hex(&secret),
        };
        (key, secret)
    }

    /// Whether it may be used at `now`.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

pub(crate) fn sha256_hex(s: &str) -> String {
    crate::net::to_hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

/// Equal, in time that does not depend on where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// A partner key's partner.
    pub partner_id: Option<String>,
    /// `None` for the admin token.
    pub key_id: Option<String>,
}

impl Principal {
    /// The bootstrap admin (the admin token).
    pub fn admin_token() -> Self {
        Self {
            role: Role::Admin,
            partner_id: None,
            key_id: None,
        }
    }
}

/// The keys, in memory and on disk.
pub struct Keys {
    store: Store,
    by_id: DashMap<String, ApiKey>,
}

impl Keys {
    /// Loads every key (blocking).
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let by_id = DashMap::new();
        for k in store.api_keys()? {
            by_id.insert(k.id.clone(), k);
        }
        Ok(Self { store, by_id })
    }

    /// Stores a key as it is now (new or revoked), durable at the store's
    /// next flush; blocking. Also how a cluster node applies a key created
    /// or revoked on another.
    pub fn apply(&self, k: &ApiKey) -> Result<(), StoreError> {
        self.store.stage_api_key(k)?;
        self.by_id.insert(k.id.clone(), k.clone());
        Ok(())
    }

    /// A key by id.
    pub fn get(&self, id: &str) -> Option<ApiKey> {
        self.by_id.get(id).map(|k| k.clone())
    }

    /// Every key, newest first.
    pub fn list(&self) -> Vec<ApiKey> {
        let mut all: Vec<ApiKey> = self.by_id.iter().map(|k| k.clone()).collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all
    }

    /// The principal a bearer secret stands for, if it is a live key.
    pub fn authenticate(&self, secret: &str, now: DateTime<Utc>) -> Option<Principal> {
        let rest = secret.strip_prefix("rk_")?;
        let (id, _) = rest.split_once('_')?;
        let key = self.by_id.get(&format!("key_{id}"))?;
        if !same(sha256_hex(secret).as_bytes(), key.secret_sha256.as_bytes()) || !key.live(now) {
            return None;
        }
        Some(Principal {
            role: key.role,
            partner_id: key.partner_id.clone(),
            key_id: Some(key.id.clone()),
        })
    }
}

/// What a route asks of the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Go on.
    Allowed,
    /// Not this role's: `403`.
    Denied,
    /// A partner key, on a route about one partner: the segment at this
    /// index (of the path after `/api/v1/`) must be its partner (else `404`).
    OwnPartner(usize),
    /// A partner key, on a link: the link must be its partner's (else `404`).
    OwnLink(usize),
}

/// The rule of every API route (the path after `/api/v1/`, split on `/`).
pub fn check(p: &Principal, method: &Method, rest: &[&str]) -> Access {
    use Role::*;
    if p.role == Admin {
        return Access::Allowed;
    }
    let roles: &[Role] = match (method, rest) {
        (&Method::GET, ["openapi.json"]) => &[Marketing, Fraud, Finance, Ingest, Partner],
        (&Method::POST, ["partners"]) => &[Marketing],
        (&Method::GET, ["partners"]) => &[Marketing, Fraud, Finance],
        (&Method::GET, ["partners", _, "links" | "referrals" | "payouts"]) => {
            if p.role == Partner {
                return Access::OwnPartner(1);
            }
            &[Marketing, Fraud, Finance]
        }
        (&Method::POST, ["partners", _, "portal-link"]) => &[Marketing],
        (&Method::GET, ["partners", _]) => {
            if p.role == Partner {
                return Access::OwnPartner(1);
            }
            &[Marketing, Fraud, Finance]
        }
        (&Method::PATCH, ["partners", _]) => &[Fraud],
        (&Method::GET, ["partners", _, "audit"]) => &[Fraud],
        (&Method::GET, ["partners", _, "balance" | "statement"]) => {
            if p.role == Partner {
                return Access::OwnPartner(1);
            }
            &[Finance]
        }
        (&Method::POST, ["links"]) => {
            if p.role == Partner {
                // Their own, where the program allows it (the handler checks).
                return Access::Allowed;
            }
            &[Marketing]
        }
        (&Method::GET, ["links", _]) => {
            if p.role == Partner {
                return Access::OwnLink(1);
            }
            &[Marketing, Fraud]
        }
        (&Method::DELETE, ["links", _]) => &[Marketing],
        (&Method::GET, ["links", _, "stats"]) => {
            if p.role == Partner {
                return Access::OwnLink(1);
            }
            &[Marketing, Fraud]
        }
        (&Method::GET, ["partners", _, "clicks", "daily"]) => {
            if p.role == Partner {
                return Access::OwnPartner(1);
            }
            &[Marketing, Fraud, Finance]
        }
        (&Method::GET, ["stats", "daily" | "top"]) => &[Marketing, Fraud, Finance],
        (&Method::GET, ["clicks"] | ["clicks", _]) => &[Marketing, Fraud],
        (&Method::GET, ["fraud", ..]) => &[Fraud],
        (&Method::POST, ["events"]) => &[Ingest],
        (&Method::POST, ["fx-rates"]) => &[Finance],
        (&Method::POST, ["coupons"]) => &[Marketing],
        (&Method::GET, ["coupons", _]) => &[Marketing, Fraud, Finance],
        (&Method::GET, ["referrals"] | ["customers", _]) => &[Finance, Fraud],
        (&Method::GET, ["problems"] | ["stats", "commissions"]) => &[Finance],
        // The review queue: the analysts decide; finance sees what is held.
        (&Method::GET, ["reviews"] | ["reviews", _]) => &[Fraud, Finance],
        (&Method::POST, ["reviews", _]) => &[Fraud],
        (_, ["payouts", ..]) => &[Finance],
        // A partner's postback: marketing sets partners up; a partner runs
        // its own tracker.
        (&Method::GET | &Method::PUT | &Method::DELETE, ["partners", _, "postback"]) => {
            if p.role == Partner {
                return Access::OwnPartner(1);
            }
            &[Marketing]
        }
        // Signing keys, API keys and merchants' webhooks: the admin's alone.
        _ => &[],
    };
    if roles.contains(&p.role) {
        Access::Allowed
    } else {
        Access::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_only_its_live_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load(Store::open(dir.path()).unwrap()).unwrap();
        let now = Utc::now();
        let rng = SystemRandom::new();
        let (k, secret) = ApiKey::new("ci".into(), Role::Ingest, None, None, now, &rng);
        assert!(secret.starts_with("rk_") && !k.secret_sha256.contains(&secret));
        keys.apply(&k).unwrap();
        keys.store.flush().unwrap();
        assert_eq!(keys.authenticate(&secret, now).unwrap().role, Role::Ingest);
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push(if secret.ends_with('a') { 'b' } else { 'a' });
        assert!(keys.authenticate(&wrong, now).is_none());
        assert!(keys.authenticate("rk_nothing_here", now).is_none());
        let mut revoked = k.clone();
        revoked.revoked_at = Some(now);
        keys.apply(&revoked).unwrap();
        assert!(keys.authenticate(&secret, now).is_none());
        let (e, s2) = ApiKey::new("old".into(), Role::Finance, None, Some(now), now, &rng);
        keys.apply(&e).unwrap();
        assert!(keys.authenticate(&s2, now).is_none(), "expired at now");
    }
}
