//! Who the visitor is: the socket peer, unless the peer is a trusted proxy,
//! in which case `Forwarded` (RFC 7239) or `X-Forwarded-For` is walked from
//! the nearest hop outwards, skipping trusted proxies. A client that is not
//! behind a trusted proxy cannot choose its own address.

use crate::net::{canonical, IpNet};
use hyper::header::{HeaderMap, HeaderName, FORWARDED};
use std::net::{IpAddr, SocketAddr};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The visitor's address.
pub fn visitor_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded = headers.contains_key(FORWARDED);
    let values = headers.get_all(if forwarded {
        FORWARDED
    } else {
        X_FORWARDED_FOR
    });
    // From the nearest hop (the last header's last element) outwards.
    for v in values.iter().rev() {
        let Ok(v) = v.to_str() else { return peer };
        for element in v.rsplit(',') {
            let hop = if forwarded {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
                    })
                    .and_then(parse_node)
            } else {
                parse_node(element.trim())
            };
            match hop {
                Some(ip) if is_trusted(ip) => continue,
                Some(ip) => return ip,
                // An unreadable hop ends what can be believed.
                None => return peer,
            }
        }
    }
    peer
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    s.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_address() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            visitor_ip("203.0.113.9".parse().unwrap(), &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let peer = "10.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            visitor_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https",
        )]);
        assert_eq!(
            visitor_ip(peer, &h, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        // Several headers are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.8, 10.0.0.2"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        assert_eq!(
            visitor_ip(peer, &h, &trusted),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("x-forwarded-for", "garbage, 10.0.0.3")]);
        assert_eq!(visitor_ip(peer, &h, &trusted), peer);
        assert_eq!(visitor_ip(peer, &HeaderMap::new(), &trusted), peer);
    }
}
