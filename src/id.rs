//! Identifiers: time-ordered click ids, random partner ids and link codes.
//!
//! A click id is 128 bits: the top 64 are a logical clock (milliseconds << 16
//! | sequence) that never goes backwards, so ids sort by time and are unique
//! within a process and across restarts (the generator is seeded with the
//! newest stored id); the low 64 bits are a keyed pseudo-random function of
//! the top half, so ids seen in URLs cannot be guessed from one another.

use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A click id; displays as 26 Crockford base32 characters (like a ULID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClickId(pub u128);

impl ClickId {
    /// Milliseconds since the epoch at which the id was minted.
    pub fn timestamp_ms(self) -> i64 {
        (self.0 >> 80) as i64
    }

    /// The smallest id that can be minted at `ms`; used for time-range scans.
    pub fn lower_bound(ms: i64) -> Self {
        ClickId((ms.max(0) as u128) << 80)
    }

    /// Big-endian bytes: byte order equals time order.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`ClickId::to_bytes`].
    pub fn from_bytes(b: [u8; 16]) -> Self {
        ClickId(u128::from_be_bytes(b))
    }

    /// Writes the 26-character text form into `out` without allocating.
    pub fn encode(self, out: &mut [u8; 26]) {
        let mut v = self.0;
        for slot in out.iter_mut().rev() {
            *slot = CROCKFORD[(v & 31) as usize];
            v >>= 5;
        }
    }
}

impl fmt::Display for ClickId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 26];
        self.encode(&mut buf);
        // Crockford alphabet is ASCII.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Why a string is not a click id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseIdError {
    #[error("must be 26 characters")]
    Length,
    #[error("contains a character outside Crockford base32")]
    Alphabet,
    #[error("is out of range")]
    Overflow,
}

impl FromStr for ClickId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 26 {
            return Err(ParseIdError::Length);
        }
        // 26 * 5 = 130 bits: the first character may only carry 3.
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            let d = decode_crockford(c).ok_or(ParseIdError::Alphabet)?;
            if i == 0 && d > 7 {
                return Err(ParseIdError::Overflow);
            }
            v = (v << 5) | d as u128;
        }
        Ok(ClickId(v))
    }
}

fn decode_crockford(c: u8) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    match c {
        b'O' => Some(0),
        b'I' | b'L' => Some(1),
        _ => CROCKFORD.iter().position(|&x| x == c).map(|p| p as u8),
    }
}

/// Mints click ids; cheap to call from many threads at once (one atomic).
#[derive(Debug)]
pub struct ClickIdGen {
    /// Last issued logical time: milliseconds << 16 | sequence within the ms.
    last: AtomicU64,
    /// Keys the pseudo-random low half of each id.
    prf: RandomState,
}

impl ClickIdGen {
    /// A generator whose ids all sort after `after` (the newest stored id).
    pub fn new(after: Option<ClickId>) -> Self {
        Self {
            last: AtomicU64::new(after.map(|id| (id.0 >> 64) as u64).unwrap_or(0)),
            prf: RandomState::new(),
        }
    }

    /// A fresh id for a click at `now_ms`.
    pub fn next(&self, now_ms: i64) -> ClickId {
        let floor = (now_ms.max(0) as u64) << 16;
        let mut prev = self.last.load(Ordering::Relaxed);
        let hi = loop {
            let next = floor.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break next,
                Err(actual) => prev = actual,
            }
        };
        let lo = self.prf.hash_one(hi);
        ClickId(((hi as u128) << 64) | lo as u128)
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random characters from `[0-9A-Za-z]`, drawn from the OS CSPRNG
/// without modulo bias.
pub fn random_base62(rng: &SystemRandom, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 32];
    while out.len() < len {
        // If the OS generator fails there is nothing sensible to do.
        rng.fill(&mut buf).expect("OS random generator failed");
        for &b in &buf {
            // 248 = 62 * 4: rejecting the top values keeps the draw uniform.
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// `n` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>(rng: &SystemRandom) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill(&mut b).expect("OS random generator failed");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_unique_within_one_millisecond() {
        let g = ClickIdGen::new(None);
        let a = g.next(1_700_000_000_000);
        let b = g.next(1_700_000_000_000);
        let c = g.next(1_699_999_999_000); // clock stepped back
        assert!(a < b && b < c);
        assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
    }

    #[test]
    fn generator_resumes_after_a_stored_id() {
        let stored = ClickIdGen::new(None).next(2_000_000_000_000);
        let g = ClickIdGen::new(Some(stored));
        assert!(g.next(1_000) > stored);
    }

    #[test]
    fn text_form_round_trips() {
        let id = ClickIdGen::new(None).next(1_700_000_000_123);
        let s = id.to_string();
        assert_eq!(s.len(), 26);
        assert_eq!(s.parse::<ClickId>(), Ok(id));
        assert_eq!(s.to_lowercase().parse::<ClickId>(), Ok(id));
        assert_eq!(
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<ClickId>(),
            Err(ParseIdError::Overflow)
        );
        assert_eq!("short".parse::<ClickId>(), Err(ParseIdError::Length));
    }

    #[test]
    fn random_codes_use_the_url_safe_alphabet() {
        let rng = SystemRandom::new();
        let code = random_base62(&rng, 40);
        assert_eq!(code.len(), 40);
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(code, random_base62(&rng, 40));
    }
}
