//! Link codes as map keys: a code of up to 15 bytes inline in 16 bytes.
//! With a million links the key's size is counted in the directory's map
//! and the click-count pages, bucket by bucket; generated codes are 10
//! bytes and custom ones rarely longer than 15 (longer codes, up to 64, are
//! kept as [`smol_str::SmolStr`] beside).

/// A link code of at most [`ShortCode::MAX`] bytes, inline in 16 bytes
/// (length first, zero-padded, so equal codes are equal arrays). A map
/// keyed by it is searched with `ShortCode::new(code)`: building the key
/// is a 16-byte copy.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortCode([u8; 16]);

impl ShortCode {
    /// Longest code kept inline.
    pub const MAX: usize = 15;

    /// `code` inline, if it is short enough.
    pub fn new(code: &str) -> Option<Self> {
        let len = code.len();
        (len <= Self::MAX).then(|| {
            let mut b = [0; 16];
            b[0] = len as u8;
            b[1..=len].copy_from_slice(code.as_bytes());
            Self(b)
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[1..=usize::from(self.0[0])])
            .expect("a code is stored from a str")
    }
}

impl std::fmt::Debug for ShortCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_codes_round_trip_and_are_found_by_a_key_built_again() {
        for code in ["", "abc", "fifteen-chars-x"] {
            let c = ShortCode::new(code).unwrap();
            assert_eq!(c.as_str(), code);
            let m = HashMap::from([(c, 1)]);
            assert_eq!(m.get(&ShortCode::new(code).unwrap()), Some(&1));
        }
        assert!(ShortCode::new("sixteen-chars-xy").is_none());
        assert_ne!(ShortCode::new("ab"), ShortCode::new("abc"));
    }
}
