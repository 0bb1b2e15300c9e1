//! IP networks: CIDR parsing and matching, and the network prefix that is
//! kept of a visitor's address instead of the address itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network in CIDR form, e.g. `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address with host bits cleared.
    addr: IpAddr,
    /// Prefix length in bits.
    prefix: u8,
}

impl IpNet {
    /// The network of `prefix` bits that contains `addr`.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then(|| Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The network address (host bits clear).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this network. An IPv4-mapped IPv6 address
    /// matches the IPv4 network it maps to.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a string is not a CIDR network.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseNetError {
    #[error("is not an IP address or CIDR network")]
    Address,
    #[error("has a prefix length that is not a number in range")]
    Prefix,
}

impl FromStr for IpNet {
    type Err = ParseNetError;

    /// Accepts `addr/len`, or a bare address meaning a single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| ParseNetError::Address)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| ParseNetError::Prefix)?,
            None => max,
        };
        IpNet::new(addr, prefix).ok_or(ParseNetError::Prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) become plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Clears every bit after the first `prefix`.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix.min(32))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix.min(128))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Bytes of an IP pseudonym (the first half of its HMAC-SHA256).
pub const IP_HASH_BYTES: usize = 16;

/// A stable pseudonym for an address: HMAC-SHA256 under the data dir's IP
/// key, first 16 bytes, hex. Useless to anyone without the key.
pub fn ip_hash(key: &ring::hmac::Key, ip: IpAddr) -> String {
    let mut out = String::with_capacity(2 * IP_HASH_BYTES);
    push_hex(&ip_hash_bytes(key, ip), &mut out);
    out
}

/// [`ip_hash`] before its hex rendering (the click log stores the bytes).
pub fn ip_hash_bytes(key: &ring::hmac::Key, ip: IpAddr) -> [u8; IP_HASH_BYTES] {
    let tag = match canonical(ip) {
        IpAddr::V4(v4) => ring::hmac::sign(key, &v4.octets()),
        IpAddr::V6(v6) => ring::hmac::sign(key, &v6.octets()),
    };
    let mut out = [0; IP_HASH_BYTES];
    out.copy_from_slice(&tag.as_ref()[..IP_HASH_BYTES]);
    out
}

/// `bytes` as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(bytes, &mut out);
    out
}

/// Lowercase or uppercase hex back into bytes; `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Appends `bytes` to `out` as lowercase hex.
pub fn push_hex(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// The network prefix kept on disk for a visitor: `/v4_bits` or `/v6_bits`.
pub fn visitor_prefix(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> IpNet {
    let ip = canonical(ip);
    let bits = if ip.is_ipv4() { v4_bits } else { v6_bits };
    IpNet {
        addr: mask(ip, bits),
        prefix: bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_networks() {
        let n: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.200.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.9".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let host: IpNet = "2001:db8::1".parse().unwrap();
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
        assert_eq!("1.2.3.4/33".parse::<IpNet>(), Err(ParseNetError::Prefix));
        assert_eq!("nope/3".parse::<IpNet>(), Err(ParseNetError::Address));
    }

    #[test]
    fn visitor_prefix_drops_host_bits() {
        let p = visitor_prefix("203.0.113.77".parse().unwrap(), 24, 48);
        assert_eq!(p.to_string(), "203.0.113.0/24");
        let p = visitor_prefix("2001:db8:1:2:3:4:5:6".parse().unwrap(), 24, 48);
        assert_eq!(p.to_string(), "2001:db8:1::/48");
    }
}
