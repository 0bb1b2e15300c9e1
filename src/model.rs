//! The records refedge keeps: partners, links and clicks. Plain data with
//! serde; no I/O and no HTTP types.

use crate::id::ClickId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerStatus {
    /// Clicks earn as usual.
    Active,
    /// Clicks still redirect but earn nothing; commissions held.
    Suspended,
    /// Removed from the program.
    Terminated,
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
    /// Link code (shared with the link's entry in memory).
    pub link: Arc<str>,
    /// Partner id (shared with the partner's entry).
    pub partner_id: Arc<str>,
    /// Program key (shared with the partner's entry).
    pub program: Arc<str>,
    /// `GET` or `HEAD`.
    pub method: &'static str,
    /// Visitor address as resolved through trusted proxies.
    pub ip: IpAddr,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `Referer`.
    pub referer: Option<String>,
    /// The query string the visitor arrived with.
    pub query: Option<String>,
    /// Headers kept as evidence.
    pub headers: ClickHeaders,
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
