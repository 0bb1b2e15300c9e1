//! The attribution token carried in the visitor's cookie, and the keyring
//! that signs and verifies it.
//!
//! Format: `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`.
//! Payload v1, big-endian: version `u8` = 1, key id `u32`, click id 16
//! bytes, issued-at and expires-at as `i64` Unix seconds, then program,
//! partner and link code as `u8`-length-prefixed UTF-8.

use crate::id::ClickId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::hmac;
use std::borrow::Cow;

const VERSION: u8 = 1;
/// Fixed part of the payload: version, key id, click id, two timestamps.
const HEADER_LEN: usize = 1 + 4 + 16 + 8 + 8;
/// Longest accepted token text; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 1024;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims<'a> {
    /// The click that issued it.
    pub click_id: ClickId,
    /// Program key.
    pub program: Cow<'a, str>,
    /// Partner id.
    pub partner_id: Cow<'a, str>,
    /// Link code.
    pub link: Cow<'a, str>,
    /// Unix seconds when signed.
    pub issued_at: i64,
    /// Unix seconds after which it is no longer valid.
    pub expires_at: i64,
}

impl Claims<'_> {
    /// A copy that owns its strings.
    pub fn into_owned(self) -> Claims<'static> {
        Claims {
            click_id: self.click_id,
            program: Cow::Owned(self.program.into_owned()),
            partner_id: Cow::Owned(self.partner_id.into_owned()),
            link: Cow::Owned(self.link.into_owned()),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        }
    }
}

/// Why a token was refused; the label is a metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was signed by a key this keyring does not hold")]
    UnknownKey,
    #[error("token was signed by a retired key")]
    RetiredKey,
    #[error("token signature does not match its contents")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

impl TokenError {
    /// Low-cardinality label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::RetiredKey => "retired_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
        }
    }
}

/// One signing key.
pub struct SigningKey {
    /// Carried in every token the key signs.
    pub id: u32,
    /// Raw secret, kept so the keyring can be saved.
    pub secret: Vec<u8>,
    /// Unix seconds when the key was made (0 when configured).
    pub created_at: i64,
    /// A retired key no longer signs or verifies.
    pub retired: bool,
    /// The secret prepared for HMAC-SHA256.
    key: hmac::Key,
}

impl SigningKey {
    /// A key from its parts.
    pub fn new(id: u32, secret: Vec<u8>, created_at: i64, retired: bool) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        Self {
            id,
            secret,
            created_at,
            retired,
            key,
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

/// Keys by id; the newest unretired key signs, every unretired key verifies.
#[derive(Debug)]
pub struct Keyring {
    /// Sorted by id, ascending.
    keys: Vec<SigningKey>,
}

/// Why the keyring cannot be changed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no key with id {0}")]
    NoSuchKey(u32),
    #[error("key {0} is the only active key; rotate before retiring it")]
    LastActiveKey(u32),
}

impl Keyring {
    /// A keyring of `keys`; at least one must be unretired.
    pub fn new(mut keys: Vec<SigningKey>) -> Option<Self> {
        keys.sort_by_key(|k| k.id);
        keys.iter().any(|k| !k.retired).then_some(Self { keys })
    }

    /// All keys, oldest first.
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        self.keys
            .iter()
            .rev()
            .find(|k| !k.retired)
            .expect("a keyring always has an active key")
    }

    /// Adds a key with the next id; it signs from now on.
    pub fn rotate(&mut self, secret: Vec<u8>, now_s: i64) -> u32 {
        let id = self.keys.last().map_or(1, |k| k.id + 1);
        self.keys.push(SigningKey::new(id, secret, now_s, false));
        id
    }

    /// Retires a key: tokens it signed stop verifying.
    pub fn retire(&mut self, id: u32) -> Result<(), KeyringError> {
        let active = self.keys.iter().filter(|k| !k.retired).count();
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or(KeyringError::NoSuchKey(id))?;
        if !key.retired && active == 1 {
            return Err(KeyringError::LastActiveKey(id));
        }
        key.retired = true;
        Ok(())
    }

    /// Signs `claims` with the newest key, appending the token to `out`.
    pub fn sign_into(&self, claims: &Claims<'_>, out: &mut String) {
        const PAYLOAD_MAX: usize = HEADER_LEN + 3 * 256;
        let key = self.signing_key();
        let mut payload = [0u8; PAYLOAD_MAX];
        let len = encode_payload(key.id, claims, &mut payload);
        let tag = hmac::sign(&key.key, &payload[..len]);
        // Both halves encoded into one stack buffer and appended at once:
        // `encode_string`'s chunked encoder (a zeroed scratch buffer and a
        // sink per call) took 1,512 instructions a token, this 921
        // (callgrind; `token/sign` 288 -> 255 ns).
        const fn b64_len(n: usize) -> usize {
            base64::encoded_len(n, false).expect("a short input")
        }
        let mut token = [0u8; b64_len(PAYLOAD_MAX) + 1 + b64_len(32)];
        let n = B64
            .encode_slice(&payload[..len], &mut token)
            .expect("room for the payload");
        token[n] = b'.';
        let m = B64
            .encode_slice(tag.as_ref(), &mut token[n + 1..])
            .expect("room for the tag");
        out.push_str(std::str::from_utf8(&token[..n + 1 + m]).expect("base64 is ASCII"));
    }

    /// Signs `claims` into a new string.
    pub fn sign(&self, claims: &Claims<'_>) -> String {
        let mut s = String::with_capacity(200);
        self.sign_into(claims, &mut s);
        s
    }

    /// Checks a token's signature (in constant time) and expiry at `now_s`.
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Claims<'static>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (p, s) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = B64.decode(p).map_err(|_| TokenError::Malformed)?;
        let tag = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        if payload.len() < HEADER_LEN || payload[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let key_id = u32::from_be_bytes(payload[1..5].try_into().expect("4 bytes"));
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or(TokenError::UnknownKey)?;
        hmac::verify(&key.key, &payload, &tag).map_err(|_| TokenError::BadSignature)?;
        if key.retired {
            return Err(TokenError::RetiredKey);
        }
        let claims = decode_payload(&payload).ok_or(TokenError::Malformed)?;
        if claims.expires_at <= now_s {
            return Err(TokenError::Expired);
        }
        Ok(claims.into_owned())
    }
}

/// Writes the payload into `buf`, returning its length. Strings longer than
/// 255 bytes are cut at a character boundary (ids and codes are far shorter).
fn encode_payload(key_id: u32, c: &Claims<'_>, buf: &mut [u8]) -> usize {
    buf[0] = VERSION;
    buf[1..5].copy_from_slice(&key_id.to_be_bytes());
    buf[5..21].copy_from_slice(&c.click_id.to_bytes());
    buf[21..29].copy_from_slice(&c.issued_at.to_be_bytes());
    buf[29..37].copy_from_slice(&c.expires_at.to_be_bytes());
    let mut at = HEADER_LEN;
    for s in [&c.program, &c.partner_id, &c.link] {
        let mut n = s.len().min(255);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        buf[at] = n as u8;
        buf[at + 1..at + 1 + n].copy_from_slice(&s.as_bytes()[..n]);
        at += 1 + n;
    }
    at
}

fn decode_payload(p: &[u8]) -> Option<Claims<'_>> {
    let click_id = ClickId::from_bytes(p[5..21].try_into().ok()?);
    let issued_at = i64::from_be_bytes(p[21..29].try_into().ok()?);
    let expires_at = i64::from_be_bytes(p[29..37].try_into().ok()?);
    let mut rest = &p[HEADER_LEN..];
    let mut next = || -> Option<&str> {
        let (&n, tail) = rest.split_first()?;
        let (s, tail) = tail.split_at_checked(n as usize)?;
        rest = tail;
        std::str::from_utf8(s).ok()
    };
    let program = next()?;
    let partner_id = next()?;
    let link = next()?;
    if !rest.is_empty() {
        return None;
    }
    Some(Claims {
        click_id,
        program: Cow::Borrowed(program),
        partner_id: Cow::Borrowed(partner_id),
        link: Cow::Borrowed(link),
        issued_at,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(vec![SigningKey::new(1, vec![7; 32], 0, false)]).unwrap()
    }

    fn claims() -> Claims<'static> {
        Claims {
            click_id: ClickId(42),
            program: "krispcall".into(),
            partner_id: "p_abc".into(),
            link: "spring".into(),
            issued_at: 1_000,
            expires_at: 2_000,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let k = ring();
        let t = k.sign(&claims());
        assert_eq!(k.verify(&t, 1_999), Ok(claims()));
        assert_eq!(k.verify(&t, 2_000), Err(TokenError::Expired));
    }

    #[test]
    fn rotation_keeps_old_tokens_until_the_key_is_retired() {
        let mut k = ring();
        let old = k.sign(&claims());
        let id = k.rotate(vec![9; 32], 10);
        assert_eq!(id, 2);
        let new = k.sign(&claims());
        assert_ne!(old, new);
        assert!(k.verify(&old, 1_500).is_ok());
        k.retire(1).unwrap();
        assert_eq!(k.verify(&old, 1_500), Err(TokenError::RetiredKey));
        assert!(k.verify(&new, 1_500).is_ok());
        assert_eq!(k.retire(2), Err(KeyringError::LastActiveKey(2)));
        assert_eq!(k.retire(5), Err(KeyringError::NoSuchKey(5)));
    }

    #[test]
    fn foreign_and_garbled_tokens_are_refused() {
        let k = ring();
        let other = Keyring::new(vec![SigningKey::new(1, vec![8; 32], 0, false)]).unwrap();
        assert_eq!(
            k.verify(&other.sign(&claims()), 1_500),
            Err(TokenError::BadSignature)
        );
        let unknown = Keyring::new(vec![SigningKey::new(9, vec![7; 32], 0, false)]).unwrap();
        assert_eq!(
            k.verify(&unknown.sign(&claims()), 1_500),
            Err(TokenError::UnknownKey)
        );
        for bad in ["", ".", "abc", "a.b", "!!!.???"] {
            assert_eq!(k.verify(bad, 1_500), Err(TokenError::Malformed), "{bad}");
        }
    }
}
