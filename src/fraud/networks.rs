//! Data-centre source networks: the shipped CC0 lists of cloud, crawler,
//! monitor and link-fetcher ranges (`data/cloud-ip-ranges/`), merged into
//! sorted address intervals and searched in O(log n).

use crate::net::canonical;
use std::net::IpAddr;

macro_rules! lists {
    ($($name:literal),* $(,)?) => {
        &[$(
            ($name, include_str!(concat!("../../data/cloud-ip-ranges/", $name, "/ipv4_merged.txt"))),
            ($name, include_str!(concat!("../../data/cloud-ip-ranges/", $name, "/ipv6_merged.txt"))),
        )*]
    };
}

/// `(provider, CIDR list)` compiled in.
pub const BUILT_IN: &[(&str, &str)] = lists![
    "amazon",
    "bing",
    "cloudflare",
    "digitalocean",
    "duckassistbot",
    "duckduckbot",
    "facebook",
    "github",
    "google",
    "googlebot",
    "linode",
    "microsoft",
    "openai",
    "oracle",
    "perplexity",
    "pingdom",
    "statuscake",
    "telegram",
    "twitter",
    "vultr",
];

/// Sorted, non-overlapping address intervals with their provider.
#[derive(Debug, Default)]
pub struct Networks {
    /// IPv4 `(start, end, provider)`.
    v4: Vec<(u32, u32, &'static str)>,
    /// IPv6 `(start, end, provider)`.
    v6: Vec<(u128, u128, &'static str)>,
}

impl Networks {
    /// The built-in lists.
    pub fn built_in() -> Self {
        let mut n = Self::default();
        for (provider, text) in BUILT_IN {
            n.add_list(provider, text);
        }
        n.finish();
        n
    }

    /// Adds one list of CIDRs (one per line; blank and `#` lines skipped;
    /// malformed lines ignored).
    pub fn add_list(&mut self, provider: &'static str, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((addr, len)) = line.split_once('/') else {
                continue;
            };
            let Ok(len) = len.parse::<u32>() else {
                continue;
            };
            match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if len <= 32 => {
                    let start = u32::from(a) & mask32(len);
                    self.v4.push((start, start | !mask32(len), provider));
                }
                Ok(IpAddr::V6(a)) if len <= 128 => {
                    let start = u128::from(a) & mask128(len);
                    self.v6.push((start, start | !mask128(len), provider));
                }
                _ => {}
            }
        }
    }

    /// Sorts and merges overlapping intervals (the first provider wins).
    pub fn finish(&mut self) {
        fn merge<T: Ord + Copy>(v: &mut Vec<(T, T, &'static str)>, next: impl Fn(T) -> Option<T>) {
            v.sort_by_key(|r| r.0);
            let mut out: Vec<(T, T, &'static str)> = Vec::with_capacity(v.len());
            for r in v.drain(..) {
                match out.last_mut() {
                    Some(last) if next(last.1).is_none_or(|n| r.0 <= n) && last.2 == r.2 => {
                        last.1 = last.1.max(r.1)
                    }
                    Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
                    _ => out.push(r),
                }
            }
            *v = out;
        }
        merge(&mut self.v4, |x: u32| x.checked_add(1));
        merge(&mut self.v6, |x: u128| x.checked_add(1));
    }

    /// The provider whose network holds `ip`, if any.
    pub fn provider(&self, ip: IpAddr) -> Option<&'static str> {
        match canonical(ip) {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Number of intervals.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether no network is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn find<T: Ord + Copy>(v: &[(T, T, &'static str)], x: T) -> Option<&'static str> {
    let i = v.partition_point(|r| r.0 <= x);
    let r = v.get(i.checked_sub(1)?)?;
    (x <= r.1).then_some(r.2)
}

fn mask32(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

fn mask128(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_lists_find_clouds_and_not_people() {
        let n = Networks::built_in();
        assert!(n.len() > 1000);
        // Loopback and private space are nobody's cloud (192.0.2.0/24, by
        // contrast, really is in the published Vultr list).
        assert_eq!(n.provider("127.0.0.1".parse().unwrap()), None);
        assert_eq!(n.provider("10.1.2.3".parse().unwrap()), None);
        // Every first address of every list is found under some provider.
        for (_, text) in BUILT_IN {
            if let Some(first) = text.lines().find(|l| l.contains('/')) {
                let addr: IpAddr = first.split('/').next().unwrap().parse().unwrap();
                assert!(n.provider(addr).is_some(), "{first}");
            }
        }
    }

    #[test]
    fn lookups_respect_interval_edges() {
        let mut n = Networks::default();
        n.add_list("test", "10.0.0.0/24\n10.0.1.0/24\n2001:db8::/32\n");
        n.finish();
        assert_eq!(n.provider("10.0.0.0".parse().unwrap()), Some("test"));
        assert_eq!(n.provider("10.0.1.255".parse().unwrap()), Some("test"));
        assert_eq!(n.provider("10.0.2.0".parse().unwrap()), None);
        assert_eq!(n.provider("9.255.255.255".parse().unwrap()), None);
        assert_eq!(
            n.provider("2001:db8:ffff::1".parse().unwrap()),
            Some("test")
        );
        assert_eq!(n.provider("::ffff:10.0.0.7".parse().unwrap()), Some("test"));
    }
}
