//! The records refedge keeps: partners, links and clicks. Plain data with
//! serde; no I/O and no HTTP types.

use crate::id::ClickId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::net::IpAddr;
use std::sync::Arc;

/// A partner (affiliate, reseller, agency) in one program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    /// `p_` followed by 16 random base62 characters.
    pub id: String,
    /// Program key.
    pub program: String,
    /// Display name.
    pub name: String,
    /// Contact e-mail; also used to catch self-referrals.
    pub email: String,
    /// The partner's site; referers are checked against it.
    pub website: String,
    /// Currency commissions are paid in (ISO 4217).
    pub currency: String,
    /// Standing in the program.
    pub status: PartnerStatus,
    /// The partner's own customer accounts at the merchant: signups under
    /// them are self-referrals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer_ids: Vec<String>,
    /// Keyed hashes of the partner's known addresses (never the addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_hashes: Vec<String>,
    /// When the partner was created.
    pub created_at: DateTime<Utc>,
}

/// A partner's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartnerStatus {
    /// Clicks earn as usual.
    Active,
    /// Clicks still redirect but earn nothing; commissions held.
    Suspended,
    /// Removed from the program.
    Terminated,
}

impl PartnerStatus {
    /// Its name, as the API spells it.
    pub fn label(self) -> &'static str {
        match self {
            PartnerStatus::Active => "active",
            PartnerStatus::Suspended => "suspended",
            PartnerStatus::Terminated => "terminated",
        }
    }
}

/// A tracked link: `/r/{code}` redirects to `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// URL-safe code, unique across programs.
    pub code: String,
    /// Owning partner.
    pub partner_id: String,
    /// The partner's program (copied so the hot path needs one lookup).
    pub program: String,
    /// Absolute http(s) URL on a host the program allows.
    pub destination: String,
    /// When the link was created.
    pub created_at: DateTime<Utc>,
    /// Set when the link was disabled; a disabled link answers 410.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// The request headers kept with a click as evidence for fraud checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickHeaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_fetch_site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_fetch_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_fetch_dest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_fetch_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_ch_ua: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_ch_ua_mobile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_ch_ua_platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sec_purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_insecure_requests: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The request text a click keeps as evidence, in the order the click log
/// stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceField {
    UserAgent,
    Referer,
    Query,
    Accept,
    AcceptLanguage,
    AcceptEncoding,
    SecFetchSite,
    SecFetchMode,
    SecFetchDest,
    SecFetchUser,
    SecChUa,
    SecChUaMobile,
    SecChUaPlatform,
    SecPurpose,
    Purpose,
    Dnt,
    UpgradeInsecureRequests,
    Via,
}

impl EvidenceField {
    /// Every field, in order.
    pub const ALL: [Self; EVIDENCE_FIELDS] = [
        Self::UserAgent,
        Self::Referer,
        Self::Query,
        Self::Accept,
        Self::AcceptLanguage,
        Self::AcceptEncoding,
        Self::SecFetchSite,
        Self::SecFetchMode,
        Self::SecFetchDest,
        Self::SecFetchUser,
        Self::SecChUa,
        Self::SecChUaMobile,
        Self::SecChUaPlatform,
        Self::SecPurpose,
        Self::Purpose,
        Self::Dnt,
        Self::UpgradeInsecureRequests,
        Self::Via,
    ];
}

/// How many [`EvidenceField`]s there are (the last one's index + 1).
pub const EVIDENCE_FIELDS: usize = EvidenceField::Via as usize + 1;

/// Longest evidence value kept: real browsers' headers are far shorter; a
/// client sending kilobytes gets the first 1 KiB kept (the verdict still
/// reads all of it), so one request cannot bloat the log.
pub const EVIDENCE_MAX: usize = 1024;

/// A click's evidence text in one buffer: one allocation per click
/// instead of one per header, and nothing copied twice.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    text: String,
    /// `(start, end)` of each field in `text`; `None` when absent.
    spans: [Option<(u16, u16)>; EVIDENCE_FIELDS],
}

impl Evidence {
    /// Room for `bytes` of text.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            spans: [None; EVIDENCE_FIELDS],
        }
    }

    /// Keeps `value` for `field`, cut at [`EVIDENCE_MAX`] bytes (on a
    /// character boundary, marked with `…`). Setting a field twice keeps
    /// the second value.
    pub fn set(&mut self, field: EvidenceField, value: &str) {
        let (kept, cut) = if value.len() > EVIDENCE_MAX {
            let mut end = EVIDENCE_MAX;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            (&value[..end], true)
        } else {
            (value, false)
        };
        let start = self.text.len();
        self.text.push_str(kept);
        if cut {
            self.text.push('…');
        }
        // 18 fields of at most 1 KiB and a mark each: always under 64 KiB.
        let span = u16::try_from(start)
            .ok()
            .zip(u16::try_from(self.text.len()).ok());
        if span.is_none() {
            self.text.truncate(start);
        }
        self.spans[field as usize] = span;
    }

    /// Keeps a value that may not be text: invalid UTF-8 replaced.
    pub fn set_bytes(&mut self, field: EvidenceField, value: &[u8]) {
        self.set(field, &String::from_utf8_lossy(value));
    }

    /// A field's value, if the request had it.
    pub fn get(&self, field: EvidenceField) -> Option<&str> {
        self.spans[field as usize].map(|(s, e)| &self.text[usize::from(s)..usize::from(e)])
    }

    /// Every field, in [`EvidenceField`] order (two evidences are equal
    /// when these are, whatever order their fields were set in).
    pub fn fields(&self) -> [Option<&str>; EVIDENCE_FIELDS] {
        self.spans
            .map(|span| span.map(|(s, e)| &self.text[usize::from(s)..usize::from(e)]))
    }
}

impl<'a> FromIterator<(EvidenceField, &'a str)> for Evidence {
    /// Evidence of these fields and values, as [`Evidence::set`] keeps them.
    fn from_iter<I: IntoIterator<Item = (EvidenceField, &'a str)>>(fields: I) -> Self {
        let mut e = Self::default();
        for (field, value) in fields {
            e.set(field, value);
        }
        e
    }
}

impl PartialEq for Evidence {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for Evidence {}

/// What the redirect did about the attribution cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieOutcome {
    /// A new token was set.
    Set,
    /// First-click program: the visitor's valid cookie for another partner
    /// was kept.
    KeptExisting,
    /// Flagged by a fraud rule: no cookie set, none overwritten.
    NotSet,
}

/// A served click, in memory, as the redirect saw it. It still holds the
/// raw visitor IP; [`ClickRecord`] is what reaches disk.
#[derive(Debug, Clone)]
pub struct Click {
    /// Time-ordered unique id (also the `refclk` parameter).
    pub id: ClickId,
    /// Link code (inline: codes are short; see [`crate::directory`]).
    pub link: SmolStr,
    /// Partner id (shared with the partner's entry).
    pub partner_id: Arc<str>,
    /// Program key (shared with the partner's entry).
    pub program: Arc<str>,
    /// `GET` or `HEAD`.
    pub method: &'static str,
    /// Visitor address as resolved through trusted proxies.
    pub ip: IpAddr,
    /// User agent, referer, query string and evidence headers.
    pub evidence: Evidence,
    /// What happened to the attribution cookie.
    pub cookie: CookieOutcome,
    /// Why an attribution cookie the visitor sent was refused, if it was.
    pub prior_token_error: Option<&'static str>,
    /// `valid`, `flagged` or `blocked`.
    pub verdict: &'static str,
    /// The fraud rules that fired, with their evidence.
    pub flags: Vec<crate::fraud::Flag>,
}

/// A click as stored: the IP replaced by a keyed hash and a network prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickRecord {
    /// Click id, 26 Crockford base32 characters.
    #[serde(with = "click_id_text")]
    pub id: ClickId,
    /// When the click was served.
    pub at: DateTime<Utc>,
    /// Link code.
    pub link: String,
    /// Partner id.
    pub partner_id: String,
    /// Program key.
    pub program: String,
    /// `GET` or `HEAD`.
    pub method: String,
    /// HMAC-SHA256 of the visitor IP under the data dir's IP key, hex,
    /// first 16 bytes: stable per visitor, useless to anyone without the key.
    pub ip_hash: String,
    /// The visitor's network (`/24` IPv4, `/48` IPv6 by default).
    pub ip_prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Headers kept as evidence.
    pub headers: ClickHeaders,
    /// What happened to the attribution cookie.
    pub cookie: CookieOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_token_error: Option<String>,
    /// `valid`, `flagged` or `blocked`.
    #[serde(default = "valid")]
    pub verdict: String,
    /// The fraud rules that fired, with their evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<crate::fraud::Flag>,
}

impl ClickRecord {
    /// The record as the click log encodes it.
    pub fn row(&self) -> ClickRow<'_> {
        let h = &self.headers;
        ClickRow {
            id: self.id,
            link: &self.link,
            partner_id: &self.partner_id,
            program: &self.program,
            method: &self.method,
            visitor: StoredVisitor::Text {
                hash: &self.ip_hash,
                network: &self.ip_prefix,
            },
            evidence: [
                self.user_agent.as_deref(),
                self.referer.as_deref(),
                self.query.as_deref(),
                h.accept.as_deref(),
                h.accept_language.as_deref(),
                h.accept_encoding.as_deref(),
                h.sec_fetch_site.as_deref(),
                h.sec_fetch_mode.as_deref(),
                h.sec_fetch_dest.as_deref(),
                h.sec_fetch_user.as_deref(),
                h.sec_ch_ua.as_deref(),
                h.sec_ch_ua_mobile.as_deref(),
                h.sec_ch_ua_platform.as_deref(),
                h.sec_purpose.as_deref(),
                h.purpose.as_deref(),
                h.dnt.as_deref(),
                h.upgrade_insecure_requests.as_deref(),
                h.via.as_deref(),
            ],
            cookie: self.cookie,
            prior_token_error: self.prior_token_error.as_deref(),
            verdict: &self.verdict,
            flags: &self.flags,
        }
    }
}

/// Stored records as rows to write again (tests, benches, tools).
pub fn rows(records: &[ClickRecord]) -> Vec<ClickRow<'_>> {
    records.iter().map(ClickRecord::row).collect()
}

/// A click on its way to disk, borrowed: the IP already replaced by its
/// hash and prefix. The click log's writer builds these straight from the
/// served clicks, so nothing is copied into owned strings to be encoded.
#[derive(Debug, Clone, Copy)]
pub struct ClickRow<'a> {
    pub id: ClickId,
    pub link: &'a str,
    pub partner_id: &'a str,
    pub program: &'a str,
    pub method: &'a str,
    pub visitor: StoredVisitor<'a>,
    /// In [`EvidenceField`] order.
    pub evidence: [Option<&'a str>; EVIDENCE_FIELDS],
    pub cookie: CookieOutcome,
    pub prior_token_error: Option<&'a str>,
    pub verdict: &'a str,
    pub flags: &'a [crate::fraud::Flag],
}

/// What is kept of the visitor's address: a keyed hash and the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredVisitor<'a> {
    /// As the click writer computes them; stored as bytes.
    Pseudonym {
        hash: [u8; crate::net::IP_HASH_BYTES],
        network: crate::net::IpNet,
    },
    /// As a [`ClickRecord`] shows them: the hash in hex, the network as
    /// CIDR text.
    Text { hash: &'a str, network: &'a str },
}

fn valid() -> String {
    "valid".into()
}

/// Serde for click ids as their text form.
pub mod click_id_text {
    use crate::id::ClickId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &ClickId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClickId, D::Error> {
        let s = <&str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_keeps_each_field_whole_up_to_a_kilobyte_then_cuts_on_a_character() {
        let mut e = Evidence::default();
        e.set(EvidenceField::UserAgent, "Mozilla/5.0");
        // 1,023 ASCII bytes and then two-byte characters: the cut lands
        // inside one and backs off to its start.
        let long = format!("{}{}", "a".repeat(EVIDENCE_MAX - 1), "é".repeat(100));
        e.set(EvidenceField::Referer, &long);
        e.set(EvidenceField::Accept, &"b".repeat(EVIDENCE_MAX));
        e.set_bytes(EvidenceField::Via, b"1.1 \xff proxy");
        e.set(EvidenceField::Query, "");
        assert_eq!(e.get(EvidenceField::UserAgent), Some("Mozilla/5.0"));
        assert_eq!(
            e.get(EvidenceField::Referer),
            Some(format!("{}…", "a".repeat(EVIDENCE_MAX - 1)).as_str())
        );
        assert_eq!(e.get(EvidenceField::Accept).unwrap().len(), EVIDENCE_MAX);
        assert_eq!(e.get(EvidenceField::Via), Some("1.1 \u{fffd} proxy"));
        assert_eq!(e.get(EvidenceField::Query), Some(""), "empty is not absent");
        assert_eq!(e.get(EvidenceField::Dnt), None);
        let fields = e.fields();
        assert_eq!(
            fields[EvidenceField::UserAgent as usize],
            Some("Mozilla/5.0")
        );
        assert_eq!(fields.iter().filter(|f| f.is_some()).count(), 5);
    }

    #[test]
    fn evidence_of_every_field_at_its_longest_still_fits() {
        let mut e = Evidence::default();
        let long = "é".repeat(EVIDENCE_MAX);
        for (i, field) in EvidenceField::ALL.into_iter().enumerate() {
            assert_eq!(field as usize, i);
            e.set(field, &long);
        }
        assert!(e
            .fields()
            .iter()
            .all(|f| f.is_some_and(|v| v.ends_with('…'))));
    }
}
