//! Partner programs as data: how a program tracks clicks (cookie window,
//! attribution model, where its links may point). The four seed programs
//! ship as TOML presets compiled into the binary; a config file can change
//! any of their settings or add programs of its own.

use std::fmt;

/// The built-in presets: `(key, TOML)`.
pub const PRESETS: &[(&str, &str)] = &[
    ("krispcall", include_str!("../presets/krispcall.toml")),
    ("aloware", include_str!("../presets/aloware.toml")),
    ("aircall", include_str!("../presets/aircall.toml")),
    ("ringostat", include_str!("../presets/ringostat.toml")),
];

/// Cookie window for a program whose configuration does not name one.
pub const DEFAULT_COOKIE_DAYS: u32 = 30;

/// One partner program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// Key used in the API and config (`krispcall`).
    pub key: String,
    /// Human name (`KrispCall`).
    pub name: String,
    /// Default currency of partners in this program (ISO 4217).
    pub currency: String,
    /// How long an attribution cookie lives, in days.
    pub cookie_days: u32,
    /// Which click wins when a visitor clicks several partners' links.
    pub attribution: Attribution,
    /// Hosts a tracked link may redirect to; nothing else is allowed, so
    /// refedge is never an open redirect.
    pub allowed_hosts: Vec<HostPattern>,
    /// How the program pays; `None` tracks referrals but pays nothing.
    pub money: Option<crate::commission::rules::Rules>,
    /// Secret for signed webhook deliveries of this program's events.
    pub webhook_secret: Option<String>,
    /// Stripe deliveries for this program (`[programs.<key>.stripe]`);
    /// `None`: its Stripe endpoint does not exist.
    pub stripe: Option<Stripe>,
    /// Partners may create their own links (API with a partner key, or the
    /// portal), within `allowed_hosts`.
    pub partner_links: bool,
    /// Soft signals that hold a new referral's commissions for review
    /// (`review_flags`, `review_fast_signup_seconds`).
    pub review: crate::commission::review::ReviewPolicy,
    /// Fraud rules for clicks and signups (`[fraud]`; defaults otherwise).
    pub fraud: crate::fraud::FraudRules,
}

/// A program's Stripe webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripe {
    /// The endpoint's signing secret (`whsec_…`), from Stripe's dashboard.
    pub webhook_secret: String,
}

impl Program {
    /// The cookie window in seconds.
    pub fn cookie_seconds(&self) -> i64 {
        i64::from(self.cookie_days) * 86_400
    }

    /// Whether a click flagged for paid search alone still attributes, its
    /// referral held for review (`review_flags` lists `paid_search`).
    pub fn reviews_paid_search(&self) -> bool {
        self.review
            .holds(crate::commission::review::ReviewFlag::PaidSearch)
    }

    /// Whether a destination host is one this program's links may point to.
    pub fn allows_host(&self, host: &str) -> bool {
        self.allowed_hosts.iter().any(|p| p.matches(host))
    }
}

/// Attribution model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// The newest click replaces an earlier partner's cookie.
    LastClick,
    /// A valid, unexpired cookie for another partner is kept.
    FirstClick,
}

impl Attribution {
    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "last_click" => Some(Self::LastClick),
            "first_click" => Some(Self::FirstClick),
            _ => None,
        }
    }
}

impl fmt::Display for Attribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LastClick => "last_click",
            Self::FirstClick => "first_click",
        })
    }
}

/// An allowed destination host: `example.com` (exactly that host) or
/// `*.example.com` (any subdomain, not the bare domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches this host only.
    Exact(String),
    /// Matches hosts ending in `.` + this suffix.
    Subdomains(String),
}

impl HostPattern {
    /// Parses a pattern; hosts are compared in lower case.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        match s.strip_prefix("*.") {
            Some(rest) if valid(rest) => Some(Self::Subdomains(rest.to_string())),
            None if valid(&s) => Some(Self::Exact(s)),
            _ => None,
        }
    }

    /// Whether `host` (already lower case, as `url` normalises it) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => host == h,
            Self::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Subdomains(h) => write!(f, "*.{h}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_exactly_what_they_say() {
        let exact = HostPattern::parse("Example.com").unwrap();
        let sub = HostPattern::parse("*.example.com").unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("www.example.com"));
        assert!(sub.matches("www.example.com"));
        assert!(sub.matches("a.b.example.com"));
        assert!(!sub.matches("example.com"));
        assert!(!sub.matches("evilexample.com"));
        assert!(!sub.matches("example.com.evil.net"));
        assert_eq!(HostPattern::parse("*."), None);
        assert_eq!(HostPattern::parse("a..b"), None);
        assert_eq!(HostPattern::parse("exa mple.com"), None);
    }
}
