//! Partners and links: validated creation, durable storage through
//! [`Store`], and the in-memory index the redirect reads (one concurrent map
//! lookup per click, never a disk read).

use crate::code::ShortCode;
use crate::config::is_currency;
use crate::id::random_base62;
use crate::model::{Link, Partner, PartnerStatus};
use crate::program::Program;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use dashmap::{DashMap, DashSet};
use ring::rand::SystemRandom;
use smol_str::SmolStr;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Length of generated link codes: 10 base62 characters, about 59 bits.
pub const GENERATED_CODE_LEN: usize = 10;

/// What the redirect needs of a partner, shared by all of its links.
#[derive(Debug)]
pub struct LivePartner {
    /// Partner id.
    pub id: Arc<str>,
    /// Its program's key.
    pub program_key: Arc<str>,
    /// Its program (here rather than in each link: 8 bytes less in each of
    /// the link map's buckets).
    pub program: Arc<Program>,
    /// Hosts of the partner's website (for referer checks).
    pub hosts: Vec<String>,
    /// Standing is active: its clicks may earn.
    active: AtomicBool,
    /// The destinations of the partner's latest links: a partner's links
    /// mostly lead to a few pages, which their links then share.
    destinations: Mutex<Vec<Arc<String>>>,
}

/// Destinations remembered per partner for sharing.
const SHARED_DESTINATIONS: usize = 8;

impl LivePartner {
    fn new(p: &Partner, program: Arc<Program>) -> Self {
        Self {
            id: p.id.as_str().into(),
            program_key: p.program.as_str().into(),
            program,
            hosts: website_hosts(&p.website),
            active: AtomicBool::new(p.status == PartnerStatus::Active),
            destinations: Mutex::new(Vec::new()),
        }
    }

    /// Whether the partner's clicks may earn now.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// `destination`, shared with an earlier link of this partner's if one
    /// leads there too.
    fn destination(&self, destination: &str) -> Arc<String> {
        let mut recent = self.destinations.lock().expect("destinations lock");
        if let Some(i) = recent.iter().position(|d| d.as_str() == destination) {
            let d = recent.remove(i);
            recent.push(d.clone());
            return d;
        }
        let d = Arc::new(destination.to_string());
        if recent.len() == SHARED_DESTINATIONS {
            recent.remove(0);
        }
        recent.push(d.clone());
        d
    }
}

/// An enabled link as the redirect needs it: 16 bytes in its map entry,
/// next to its code (the full [`Link`] stays on disk for the API; a
/// disabled link is only its code, in [`Directory`]'s disabled set). With
/// a million links the directory is most of the server's memory.
#[derive(Debug)]
pub struct LiveLink {
    /// Where the link redirects (shared among a partner's links to the
    /// same page).
    pub destination: Arc<String>,
    /// The owning partner (and through it the program).
    pub partner: Arc<LivePartner>,
}

impl LiveLink {
    fn new(l: &Link, partner: Arc<LivePartner>) -> Self {
        Self {
            destination: partner.destination(&l.destination),
            partner,
        }
    }
}

/// Seeded fast hashing for the link map (codes come from requests).
type LinkHash = foldhash::fast::RandomState;

/// Enabled links by code, in two maps: short codes (nearly all) as
/// 16-byte inline keys, longer custom codes as [`SmolStr`]s (24 bytes,
/// inline up to 23). With a million links the key's size is 16 MB of the
/// map (two million buckets).
struct Links {
    short: DashMap<ShortCode, LiveLink, LinkHash>,
    long: DashMap<SmolStr, LiveLink, LinkHash>,
}

impl Links {
    fn new() -> Self {
        Self {
            short: DashMap::with_hasher(LinkHash::default()),
            long: DashMap::with_hasher(LinkHash::default()),
        }
    }

    fn get(&self, code: &str) -> Option<LinkRef<'_>> {
        match ShortCode::new(code) {
            Some(short) => self.short.get(&short).map(|r| LinkRef(Held::Short(r))),
            None => self.long.get(code).map(|r| LinkRef(Held::Long(r))),
        }
    }

    fn insert(&self, code: &str, link: LiveLink) {
        match ShortCode::new(code) {
            Some(short) => self.short.insert(short, link),
            None => self.long.insert(SmolStr::new(code), link),
        };
    }

    fn remove(&self, code: &str) {
        match ShortCode::new(code) {
            Some(short) => {
                self.short.remove(&short);
            }
            None => {
                self.long.remove(code);
            }
        }
    }

    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    fn shrink_to_fit(&self) {
        self.short.shrink_to_fit();
        self.long.shrink_to_fit();
    }
}

/// A link being answered: its code and [`LiveLink`], under a read guard of
/// its map shard (creating a link in the same shard waits for the click).
pub struct LinkRef<'a>(Held<'a>);

enum Held<'a> {
    Short(dashmap::mapref::one::Ref<'a, ShortCode, LiveLink>),
    Long(dashmap::mapref::one::Ref<'a, SmolStr, LiveLink>),
}

impl LinkRef<'_> {
    /// The link's code.
    pub fn code(&self) -> &str {
        match &self.0 {
            Held::Short(r) => r.key().as_str(),
            Held::Long(r) => r.key(),
        }
    }
}

impl std::ops::Deref for LinkRef<'_> {
    type Target = LiveLink;
    fn deref(&self) -> &LiveLink {
        match &self.0 {
            Held::Short(r) => r.value(),
            Held::Long(r) => r.value(),
        }
    }
}

/// The host of a partner's website, without `www.`.
pub fn website_hosts(website: &str) -> Vec<String> {
    url::Url::parse(website)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
        })
        .into_iter()
        .collect()
}

/// Why a directory operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("link code {0:?} is already taken")]
    CodeTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DirectoryError {
    DirectoryError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A partner to create, as received.
#[derive(Debug, Clone)]
pub struct NewPartner {
    pub program: String,
    pub name: String,
    pub email: String,
    pub website: String,
    pub currency: Option<String>,
    /// The partner's own customer ids at the merchant.
    pub customer_ids: Vec<String>,
    /// Keyed hashes of the partner's known addresses.
    pub ip_hashes: Vec<String>,
}

/// A link to create, as received.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub partner_id: String,
    pub destination: String,
    pub code: Option<String>,
}

/// A partner as stored, and the part of it its links read on every click
/// (kept in one entry so the two can never disagree).
struct PartnerEntry {
    partner: Partner,
    /// `None` while the partner's program is not configured: its links
    /// answer 404 and it can get no new ones.
    live: Option<Arc<LivePartner>>,
}

impl PartnerEntry {
    fn new(partner: Partner, programs: &BTreeMap<String, Arc<Program>>) -> Self {
        let live = programs
            .get(&partner.program)
            .map(|program| Arc::new(LivePartner::new(&partner, program.clone())));
        Self { partner, live }
    }
}

/// Partners and links, in memory and on disk.
pub struct Directory {
    /// Programs by key.
    programs: BTreeMap<String, Arc<Program>>,
    /// Durable copy.
    store: Store,
    /// Partners by id, each with what its links share.
    partners: DashMap<String, PartnerEntry>,
    /// Partner ids, newest first: the order partners are listed in.
    newest_first: std::sync::RwLock<std::collections::BTreeSet<(std::cmp::Reverse<i64>, String)>>,
    /// Links by code: the redirect's only lookup. Codes sit inline in the
    /// entry: no allocation per link, no pointer to follow on a lookup.
    links: Links,
    /// Codes of disabled links (they answer 410): kept out of `links`, so
    /// an enabled link's entry needs no flag.
    disabled: DashSet<SmolStr, LinkHash>,
    /// Source of ids and codes.
    rng: SystemRandom,
}

impl Directory {
    /// Loads every partner and link from the store.
    pub fn load(store: Store, programs: &BTreeMap<String, Program>) -> Result<Self, StoreError> {
        let programs: BTreeMap<String, Arc<Program>> = programs
            .iter()
            .map(|(k, p)| (k.clone(), Arc::new(p.clone())))
            .collect();
        let partners = DashMap::new();
        let mut newest_first = std::collections::BTreeSet::new();
        for p in store.partners()? {
            newest_first.insert(order_key(&p));
            partners.insert(p.id.clone(), PartnerEntry::new(p, &programs));
        }
        let links = Links::new();
        let disabled = DashSet::with_hasher(LinkHash::default());
        store.for_each_link(|l| {
            if l.disabled_at.is_some() {
                disabled.insert(SmolStr::new(&l.code));
                return;
            }
            // A link's program is its partner's, which the partner's live
            // part carries (none while that program is not configured).
            match partners.get(&l.partner_id).map(|p| p.live.clone()) {
                Some(Some(partner)) => links.insert(&l.code, LiveLink::new(&l, partner)),
                Some(None) => tracing::warn!(
                    code = %l.code,
                    program = %l.program,
                    "link belongs to a program no longer configured; it will answer 404"
                ),
                None => tracing::warn!(
                    code = %l.code,
                    partner = %l.partner_id,
                    "link's partner is missing; it will answer 404"
                ),
            }
        })?;
        links.shrink_to_fit();
        Ok(Self {
            programs,
            store,
            partners,
            newest_first: std::sync::RwLock::new(newest_first),
            links,
            disabled,
            rng: SystemRandom::new(),
        })
    }

    /// The hot-path lookup: an enabled link.
    pub fn live_link(&self, code: &str) -> Option<LinkRef<'_>> {
        self.links.get(code)
    }

    /// Whether `code` is a disabled link's (it answers 410, not 404).
    pub fn is_disabled(&self, code: &str) -> bool {
        self.disabled.contains(code)
    }

    /// How many enabled links are loaded.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// A partner by id.
    pub fn partner(&self, id: &str) -> Option<Partner> {
        self.partners.get(id).map(|p| p.partner.clone())
    }

    /// A page of partners, newest first, that `keep` accepts, starting
    /// after the partner `after`; and whether more follow.
    pub fn partners_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Partner) -> bool,
    ) -> (Vec<Partner>, bool) {
        let order = self.newest_first.read().expect("partner order lock");
        let start = after.and_then(|id| self.partner(id)).map(|p| order_key(&p));
        let mut out = Vec::new();
        let range = match &start {
            Some(k) => order.range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => order.range::<(std::cmp::Reverse<i64>, String), _>(..),
        };
        for (_, id) in range {
            let Some(p) = self.partners.get(id) else {
                continue;
            };
            if keep(&p.partner) {
                if out.len() == limit {
                    return (out, true);
                }
                out.push(p.partner.clone());
            }
        }
        (out, false)
    }

    /// How many partners there are.
    pub fn partner_count(&self) -> usize {
        self.partners.len()
    }

    /// Changes a partner's standing durably. Terminated is final. Blocks on
    /// disk.
    pub fn set_status(&self, id: &str, status: PartnerStatus) -> Result<Partner, DirectoryError> {
        let p = self
            .partner(id)
            .ok_or(DirectoryError::NotFound("partner"))?;
        let p = Self::with_status(&p, status)?;
        self.apply_partner(&p)?;
        self.store.flush()?;
        Ok(p)
    }

    /// Validates a new partner and gives it an id; stores nothing.
    pub fn check_partner(
        &self,
        new: NewPartner,
        now: DateTime<Utc>,
    ) -> Result<Partner, DirectoryError> {
        let program = self.programs.get(&new.program).ok_or_else(|| {
            let known: Vec<&str> = self.programs.keys().map(String::as_str).collect();
            invalid(
                "program",
                format!(
                    "unknown program {:?}; known: {}",
                    new.program,
                    known.join(", ")
                ),
            )
        })?;
        let name = new.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        let email = new.email.trim().to_ascii_lowercase();
        if !is_email(&email) {
            return Err(invalid(
                "email",
                "must be an e-mail address like name@example.com",
            ));
        }
        let website = parse_http_url(&new.website).map_err(|r| invalid("website", r))?;
        let currency = new.currency.unwrap_or_else(|| program.currency.clone());
        if !is_currency(&currency) {
            return Err(invalid(
                "currency",
                "must be a 3-letter ISO 4217 code like USD",
            ));
        }
        Ok(Partner {
            id: format!("p_{}", random_base62(&self.rng, 16)),
            program: program.key.clone(),
            name,
            email,
            website: website.to_string(),
            currency,
            status: PartnerStatus::Active,
            customer_ids: new.customer_ids,
            ip_hashes: new.ip_hashes,
            created_at: now,
        })
    }

    /// Validates and durably stores a new partner. Blocks on disk.
    pub fn create_partner(
        &self,
        new: NewPartner,
        now: DateTime<Utc>,
    ) -> Result<Partner, DirectoryError> {
        let partner = self.check_partner(new, now)?;
        self.apply_partner(&partner)?;
        self.store.flush()?;
        Ok(partner)
    }

    /// Stores a partner as it is now (new, or with a changed standing),
    /// in memory and on disk (durable at the store's next flush): how a
    /// cluster node applies a change made on another. Blocks on disk.
    pub fn apply_partner(&self, p: &Partner) -> Result<(), StoreError> {
        self.store.stage_partner(p)?;
        match self.partners.get_mut(&p.id) {
            Some(mut e) => {
                if let Some(live) = &e.live {
                    live.active
                        .store(p.status == PartnerStatus::Active, Ordering::Relaxed);
                }
                e.partner = p.clone();
            }
            None => {
                self.newest_first
                    .write()
                    .expect("partner order lock")
                    .insert(order_key(p));
                self.partners
                    .insert(p.id.clone(), PartnerEntry::new(p.clone(), &self.programs));
            }
        }
        Ok(())
    }

    /// A partner with a new standing, checked (terminated is final); not
    /// stored.
    pub fn with_status(p: &Partner, status: PartnerStatus) -> Result<Partner, DirectoryError> {
        if p.status == PartnerStatus::Terminated && status != PartnerStatus::Terminated {
            return Err(invalid(
                "status",
                "a terminated partner cannot be reinstated",
            ));
        }
        let mut p = p.clone();
        p.status = status;
        Ok(p)
    }

    /// Validates a new link and picks its code (the one asked for, or a
    /// random one); stores nothing.
    pub fn check_link(&self, new: &NewLink, now: DateTime<Utc>) -> Result<Link, DirectoryError> {
        Ok(self.check_link_live(new, now)?.0)
    }

    fn check_link_live(
        &self,
        new: &NewLink,
        now: DateTime<Utc>,
    ) -> Result<(Link, Arc<LivePartner>), DirectoryError> {
        let (partner, live_partner) = self
            .partners
            .get(&new.partner_id)
            .map(|e| (e.partner.clone(), e.live.clone()))
            .ok_or_else(|| {
                invalid(
                    "partner_id",
                    format!("no partner with id {:?}", new.partner_id),
                )
            })?;
        if partner.status == PartnerStatus::Terminated {
            return Err(invalid("partner_id", "partner is terminated"));
        }
        let live_partner = live_partner
            .ok_or_else(|| invalid("partner_id", "partner's program is no longer configured"))?;
        let program = live_partner.program.clone();
        let destination = check_destination(&new.destination, &program)?;
        if let Some(code) = &new.code {
            if !is_valid_code(code) {
                return Err(invalid(
                    "code",
                    "must be 3 to 64 characters from A-Z, a-z, 0-9, '-' and '_'",
                ));
            }
        }
        let code = new
            .code
            .clone()
            .unwrap_or_else(|| random_base62(&self.rng, GENERATED_CODE_LEN));
        let link = Link {
            code,
            partner_id: partner.id.clone(),
            program: program.key.clone(),
            destination,
            created_at: now,
            disabled_at: None,
        };
        Ok((link, live_partner))
    }

    /// Validates and durably stores a new link. Blocks on disk.
    pub fn create_link(&self, new: NewLink, now: DateTime<Utc>) -> Result<Link, DirectoryError> {
        // A generated code colliding is astronomically unlikely; retry anyway.
        for _ in 0..8 {
            let (link, live_partner) = self.check_link_live(&new, now)?;
            if self.store.insert_link(&link)? {
                self.links
                    .insert(&link.code, LiveLink::new(&link, live_partner));
                return Ok(link);
            }
            if new.code.is_some() {
                return Err(DirectoryError::CodeTaken(link.code));
            }
        }
        Err(invalid("code", "could not find a free code; try again"))
    }

    /// Stores a link as it is now (new, or disabled), in memory and on
    /// disk (durable at the store's next flush): how a cluster node
    /// applies a change made on another. A link whose partner is not known
    /// answers 404 until it is. Blocks on disk.
    pub fn apply_link(&self, l: &Link) -> Result<(), StoreError> {
        self.store.stage_link(l)?;
        if l.disabled_at.is_some() {
            // Into the disabled set first: a click in between finds the
            // link in one or the other, never in neither.
            self.disabled.insert(SmolStr::new(&l.code));
            self.links.remove(&l.code);
            return Ok(());
        }
        match self
            .partners
            .get(&l.partner_id)
            .and_then(|p| p.live.clone())
        {
            Some(partner) => {
                self.links.insert(&l.code, LiveLink::new(l, partner));
                self.disabled.remove(l.code.as_str());
            }
            None => {
                tracing::warn!(code = %l.code, partner = %l.partner_id, "link's partner is not known here; it answers 404")
            }
        }
        Ok(())
    }

    /// Disables a link: it answers 410 from now on. Blocks on disk.
    /// Disabling twice keeps the first time.
    pub fn disable_link(&self, code: &str, now: DateTime<Utc>) -> Result<Link, DirectoryError> {
        if self.live_link(code).is_none() && !self.is_disabled(code) {
            return Err(DirectoryError::NotFound("link"));
        }
        let mut link = self.link(code)?.ok_or(DirectoryError::NotFound("link"))?;
        if link.disabled_at.is_none() {
            link.disabled_at = Some(now);
            self.apply_link(&link)?;
            self.store.flush()?;
        }
        Ok(link)
    }

    /// A link as stored (the API's view). Blocks on disk.
    pub fn link(&self, code: &str) -> Result<Option<Link>, DirectoryError> {
        Ok(self.store.link(code)?)
    }
}

fn order_key(p: &Partner) -> (std::cmp::Reverse<i64>, String) {
    (
        std::cmp::Reverse(p.created_at.timestamp_millis()),
        p.id.clone(),
    )
}

/// Codes: 3 to 64 of `[A-Za-z0-9_-]`.
pub fn is_valid_code(code: &str) -> bool {
    (3..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && !local.contains(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An absolute http(s) URL with a host and no credentials.
fn parse_http_url(raw: &str) -> Result<url::Url, String> {
    let raw = raw.trim();
    let u = url::Url::parse(raw).map_err(|e| format!("is not an absolute URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not allowed; use http or https",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    Ok(u)
}

/// Checks that a destination is an absolute http(s) URL on one of the
/// program's hosts; returns its normalised form.
pub fn check_destination(raw: &str, program: &Program) -> Result<String, DirectoryError> {
    let u = parse_http_url(raw).map_err(|r| invalid("destination", r))?;
    let host = u.host_str().unwrap_or_default();
    if !program.allows_host(host) {
        let allowed: Vec<String> = program
            .allowed_hosts
            .iter()
            .map(|h| h.to_string())
            .collect();
        return Err(invalid(
            "destination",
            format!(
                "host {host:?} is not allowed for program {}; allowed: {}",
                program.key,
                allowed.join(", ")
            ),
        ));
    }
    Ok(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Attribution, HostPattern};

    fn program() -> Program {
        Program {
            key: "acme".into(),
            name: "Acme".into(),
            currency: "USD".into(),
            cookie_days: 30,
            attribution: Attribution::LastClick,
            allowed_hosts: vec![
                HostPattern::parse("acme.test").unwrap(),
                HostPattern::parse("*.acme.test").unwrap(),
            ],
            money: None,
            webhook_secret: None,
            stripe: None,
            partner_links: false,
            review: Default::default(),
            fraud: Default::default(),
        }
    }

    /// A partner of the `acme` test program.
    fn acme_partner(d: &Directory, now: DateTime<Utc>) -> Partner {
        d.create_partner(
            NewPartner {
                program: "acme".into(),
                name: "Blog".into(),
                email: "a@blog.example".into(),
                website: "https://blog.example".into(),
                currency: None,
                customer_ids: vec![],
                ip_hashes: vec![],
            },
            now,
        )
        .unwrap()
    }

    #[test]
    fn codes_of_every_length_are_found_disabled_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now();
        let programs = BTreeMap::from([("acme".to_string(), program())]);
        // Around the inline key's limit, and the longest allowed.
        let codes = [
            "abc",
            "fifteen-chars-x",
            "sixteen-chars-xy",
            &"L".repeat(64),
        ];
        {
            let d = Directory::load(Store::open(dir.path()).unwrap(), &programs).unwrap();
            let p = acme_partner(&d, now);
            for (i, code) in codes.iter().enumerate() {
                let l = d
                    .create_link(
                        NewLink {
                            partner_id: p.id.clone(),
                            destination: format!("https://acme.test/{i}"),
                            code: Some(code.to_string()),
                        },
                        now,
                    )
                    .unwrap();
                let live = d.live_link(&l.code).expect("found");
                assert_eq!(live.code(), *code);
                assert_eq!(*live.destination, format!("https://acme.test/{i}"));
            }
            assert!(
                d.live_link("fifteen-chars-").is_none(),
                "a prefix is not a code"
            );
            assert_eq!(d.link_count(), 4);
            d.disable_link("sixteen-chars-xy", now).unwrap();
            d.disable_link("abc", now).unwrap();
        }
        let d = Directory::load(Store::open(dir.path()).unwrap(), &programs).unwrap();
        assert_eq!(d.link_count(), 2);
        for code in ["abc", "sixteen-chars-xy"] {
            assert!(d.live_link(code).is_none() && d.is_disabled(code), "{code}");
        }
        for code in [codes[1], codes[3]] {
            assert_eq!(d.live_link(code).expect("found").code(), code);
        }
    }

    #[test]
    fn a_program_dropped_from_the_config_leaves_its_links_unanswered() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now();
        let with = BTreeMap::from([("acme".to_string(), program())]);
        let (partner, code) = {
            let d = Directory::load(Store::open(dir.path()).unwrap(), &with).unwrap();
            let p = acme_partner(&d, now);
            let new = |code: &str| NewLink {
                partner_id: p.id.clone(),
                destination: "https://acme.test/".into(),
                code: Some(code.into()),
            };
            let l = d.create_link(new("acme-one"), now).unwrap();
            assert!(d.live_link(&l.code).is_some());
            d.create_link(new("acme-two"), now).unwrap();
            d.disable_link("acme-two", now).unwrap();
            (p, l.code)
        };
        let d = Directory::load(Store::open(dir.path()).unwrap(), &BTreeMap::new()).unwrap();
        assert!(d.live_link(&code).is_none(), "no program: 404");
        assert!(d.is_disabled("acme-two"), "a disabled link stays disabled");
        let refused = d.create_link(
            NewLink {
                partner_id: partner.id.clone(),
                destination: "https://acme.test/".into(),
                code: None,
            },
            now,
        );
        assert!(
            matches!(&refused, Err(DirectoryError::Invalid { field: "partner_id", reason })
                if reason.contains("no longer configured")),
            "{refused:?}"
        );
        // The partner itself can still be managed.
        let p = d.set_status(&partner.id, PartnerStatus::Suspended).unwrap();
        assert_eq!(p.status, PartnerStatus::Suspended);
    }

    #[test]
    fn destinations_must_stay_on_the_programs_hosts() {
        let p = program();
        assert_eq!(
            check_destination("https://www.ACME.test/pricing?x=1#top", &p).unwrap(),
            "https://www.acme.test/pricing?x=1#top"
        );
        for bad in [
            "javascript:alert(1)",
            "//acme.test/x",
            "/relative",
            "https://evil.test/",
            "https://acme.test.evil.test/",
            "https://acme.test@evil.test/",
            "https://user:pw@acme.test/",
            "ftp://acme.test/",
            "https:\\\\evil.test",
            "data:text/html,hi",
        ] {
            assert!(check_destination(bad, &p).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn codes_and_emails() {
        assert!(is_valid_code("spring-sale_2026"));
        assert!(!is_valid_code("ab"));
        assert!(!is_valid_code("has space"));
        assert!(!is_valid_code("slash/y"));
        assert!(is_email("a.b+c@example.co.uk"));
        assert!(!is_email("nobody"));
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@example.com"));
    }

    #[test]
    fn a_partners_links_to_one_page_share_its_destination() {
        let partner = LivePartner::new(
            &Partner {
                id: "p_1".into(),
                program: "krispcall".into(),
                name: "Blog".into(),
                email: "a@blog.example".into(),
                website: "https://blog.example".into(),
                currency: "USD".into(),
                status: PartnerStatus::Active,
                customer_ids: vec![],
                ip_hashes: vec![],
                created_at: chrono::Utc::now(),
            },
            Arc::new(program()),
        );
        let pricing = partner.destination("https://krispcall.com/pricing");
        // More distinct pages than are remembered, then pricing again: it
        // was used most recently but one, so it is still shared.
        for i in 0..SHARED_DESTINATIONS - 1 {
            partner.destination(&format!("https://krispcall.com/p{i}"));
        }
        let again = partner.destination("https://krispcall.com/pricing");
        assert!(Arc::ptr_eq(&pricing, &again));
        for i in 0..SHARED_DESTINATIONS {
            partner.destination(&format!("https://krispcall.com/q{i}"));
        }
        let evicted = partner.destination("https://krispcall.com/pricing");
        assert!(!Arc::ptr_eq(&pricing, &evicted));
        assert_eq!(*evicted, *pricing);
    }
}
