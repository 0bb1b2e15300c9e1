//! Verdicts on clicks, decided in the request from memory: `valid`, or
//! flagged with reasons and the evidence that fired. No HTTP types: the
//! edge hands over a [`ClickFacts`] of plain strings.
//!
//! Memory stays bounded however many visitors arrive: limiter and window
//! entries of idle visitors are dropped by [`Guard::prune`], which the
//! server runs every few seconds.

pub mod networks;
pub mod ua;
mod visitors;

use crate::clock::SharedClock;
use governor::clock::Clock as GovClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use networks::Networks;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use visitors::Visitors;

/// Why a click was flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Bot,
    Stuffing,
    RateLimited,
    Duplicate,
    PaidSearch,
    TokenTampered,
}

impl Reason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::Stuffing => "stuffing",
            Self::RateLimited => "rate_limited",
            Self::Duplicate => "duplicate",
            Self::PaidSearch => "paid_search",
            Self::TokenTampered => "token_tampered",
        }
    }

    /// Every reason, for metrics and summaries.
    pub const ALL: [Reason; 6] = [
        Self::Bot,
        Self::Stuffing,
        Self::RateLimited,
        Self::Duplicate,
        Self::PaidSearch,
        Self::TokenTampered,
    ];
}

/// One rule that fired, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub reason: Reason,
    /// Which header or value triggered it.
    pub evidence: String,
}

/// What to do with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Redirect; set the cookie only if no flag fired.
    Redirect,
    /// `429 Too Many Requests`: far beyond the rate limits.
    TooMany,
    /// `403`: the program blocks paid-search clicks (the page links on).
    Block,
}

/// A click's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Empty for a valid click.
    pub flags: Vec<Flag>,
    pub action: Action,
}

impl Verdict {
    /// `valid`, `flagged` or `blocked`.
    pub fn label(&self) -> &'static str {
        match (self.action, self.flags.is_empty()) {
            (Action::Redirect, true) => "valid",
            (Action::Redirect, false) => "flagged",
            _ => "blocked",
        }
    }
}

/// How a program handles paid-search clicks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaidSearchPolicy {
    /// Not looked at.
    Allow,
    /// Flagged: redirected without attribution.
    #[default]
    Flag,
    /// Refused with a 403 page that still links to the destination.
    Block,
}

/// A program's fraud settings (`[fraud]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudRules {
    /// Turns every click check off (clicks are then all `valid`).
    pub enabled: bool,
    /// Clicks per minute by one visitor on one link before `rate_limited`.
    pub visitor_link_per_minute: u32,
    /// Clicks per minute by one visitor across all links.
    pub visitor_per_minute: u32,
    /// Clicks per second on all of a partner's links.
    pub partner_per_second: u32,
    /// Per-partner overrides of `partner_per_second`.
    pub partner_limits: BTreeMap<String, u32>,
    /// Beyond limit × this, the visitor gets `429` instead of a redirect.
    pub block_multiplier: u32,
    /// Same visitor, same link, inside this window: `duplicate`.
    pub duplicate_window_seconds: u64,
    /// One visitor on this many different partners' links...
    pub burst_partners: usize,
    /// ...inside this window: `stuffing`.
    pub burst_window_seconds: u64,
    /// Flag clicks whose `Referer` is not one of the partner's websites.
    pub require_partner_referer: bool,
    /// Ad click ids or brand searches.
    pub paid_search: PaidSearchPolicy,
    /// Brand terms (lower case) that must not be bid on.
    pub brand_terms: Vec<String>,
    /// Requests without the headers every browser sends are `bot`.
    pub require_browser_headers: bool,
    /// Clicks from data-centre networks are `bot`.
    pub datacenter_is_bot: bool,
    /// Clicks whose user agent is an app's own HTTP client (Android's
    /// `Dalvik/…`: an app fetching the link, not a person navigating) are
    /// `bot`. In-app browsers (web views) are browsers either way.
    pub flag_app_clients: bool,
    /// Signups sooner than this after their click are scripted leads.
    pub min_click_to_signup_seconds: u64,
}

impl Default for FraudRules {
    fn default() -> Self {
        Self {
            enabled: true,
            visitor_link_per_minute: 10,
            visitor_per_minute: 60,
            partner_per_second: 1000,
            partner_limits: BTreeMap::new(),
            block_multiplier: 5,
            duplicate_window_seconds: 30,
            burst_partners: 3,
            burst_window_seconds: 10,
            require_partner_referer: false,
            paid_search: PaidSearchPolicy::Flag,
            brand_terms: Vec::new(),
            require_browser_headers: true,
            datacenter_is_bot: true,
            flag_app_clients: true,
            min_click_to_signup_seconds: 5,
        }
    }
}

/// What the edge knows of a click, as plain values.
#[derive(Debug, Clone, Default)]
pub struct ClickFacts<'a> {
    pub head: bool,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub accept_language: Option<&'a str>,
    pub sec_fetch_dest: Option<&'a str>,
    pub sec_fetch_mode: Option<&'a str>,
    pub sec_purpose: Option<&'a str>,
    pub purpose: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub query: Option<&'a str>,
    pub program: &'a str,
    pub partner: &'a str,
    pub link: &'a str,
    /// Hosts of the partner's registered websites.
    pub partner_hosts: &'a [String],
    /// Why the attribution cookie the visitor sent was refused.
    pub token_error: Option<&'static str>,
    /// The click's instant (epoch ms), if the caller has read the clock
    /// already; the guard reads it otherwise.
    pub now_ms: Option<i64>,
}

/// Governor on the app's clock, so tests drive limiters with a fake clock.
#[derive(Clone)]
pub struct AppClock(pub SharedClock);

thread_local! {
    /// The instant of the verdict being computed on this thread: the
    /// limiters read the clock once per click instead of once per check.
    static VERDICT_NOW: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

impl GovClock for AppClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        let ms = VERDICT_NOW
            .with(|c| c.get())
            .unwrap_or_else(|| self.0.now_ms());
        Duration::from_millis(ms.max(0) as u64)
    }
}

/// Holds the verdict's instant for the limiters until dropped.
struct VerdictInstant;

impl VerdictInstant {
    fn set(ms: i64) -> Self {
        VERDICT_NOW.with(|c| c.set(Some(ms)));
        Self
    }
}

impl Drop for VerdictInstant {
    fn drop(&mut self) {
        VERDICT_NOW.with(|c| c.set(None));
    }
}

/// Fast seeded hashing for the fraud maps: keys are attacker-chosen
/// addresses, so the seed is per process; SipHash was a measurable share
/// of the verdict.
type FastHash = foldhash::fast::RandomState;

/// Visitor-table shards in all: pruning sweeps one shard at a time under
/// its lock, so small shards keep the redirect from waiting behind a
/// sweep.
const SHARDS: usize = 256;

/// The visitor tables are split into this many parts, and [`Guard::prune_step`]
/// sweeps one part at a time: with two million visitors in the window a
/// whole sweep took the server core for tens of milliseconds every second
/// (the p99 of the fixed-rate load test); a sixteenth of it is short.
pub const PRUNE_PARTS: usize = 16;

type Keyed<K> = RateLimiter<K, DashMapStateStore<K, FastHash>, AppClock, NoOpMiddleware<Duration>>;

/// `n` clicks per `per`, all of them allowed at once.
fn quota(per: Duration, n: u32) -> Quota {
    let n = NonZeroU32::new(n.max(1)).expect("non-zero");
    Quota::with_period(per / n.get())
        .expect("positive period")
        .allow_burst(n)
}

/// Whether charging `n` clicks at once puts `key` over `limiter`'s quota
/// (`n = 0` charges nothing).
fn over_by<K, S>(
    limiter: &RateLimiter<K, S, AppClock, NoOpMiddleware<Duration>>,
    key: &K,
    n: u32,
) -> bool
where
    K: std::hash::Hash + Eq + Clone,
    S: StateStore<Key = K>,
{
    match NonZeroU32::new(n) {
        None => false,
        Some(n) => !matches!(limiter.check_key_n(key, n), Ok(Ok(_))),
    }
}

/// A keyed limiter on the app clock, and its most keys since it last shrank.
struct Limit<K: std::hash::Hash + Eq + Clone>(Keyed<K>, AtomicUsize);

impl<K: std::hash::Hash + Eq + Clone> Limit<K> {
    fn new(per: Duration, n: u32, clock: &AppClock) -> Self {
        Self(
            RateLimiter::new(quota(per, n), DashMapStateStore::default(), clock.clone()),
            AtomicUsize::new(0),
        )
    }

    /// Whether charging `n` clicks at once puts `key` over the limit (the
    /// first click of a visitor is charged late, with the second: a fresh
    /// key cannot be over any limit, and skipping its insert is most of the
    /// cost for one-click visitors).
    fn over(&self, key: &K, n: u32) -> bool {
        over_by(&self.0, key, n)
    }

    fn prune(&self) {
        let before = self.0.len();
        self.0.retain_recent();
        // As for the visitor tables: shrink only once mostly empty.
        let peak = self.1.fetch_max(before, Ordering::Relaxed).max(before);
        let now = self.0.len();
        if now * 4 < peak {
            self.0.shrink_to_fit();
            self.1.store(now, Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

thread_local! {
    /// The limiter state of the visitor whose entry the verdict on this
    /// thread holds: (visitor, GCRA state).
    static HELD_VISITOR: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The per-visitor limiter's governor state store: the GCRA state (the
/// theoretical arrival time) of the visitor whose [`Visitors`] entry the
/// verdict holds, so charging the limiter costs no second map access. The
/// entry's lock makes measure-and-replace atomic; only
/// [`HeldVisitor::charge`] reaches this limiter.
struct HeldVisitor;

impl HeldVisitor {
    /// Runs `check` (a charge of the per-visitor limiter for `visitor`)
    /// against the state in `entry`, which the caller holds locked.
    fn charge<T>(entry: &mut Recent, visitor: u64, check: impl FnOnce() -> T) -> T {
        HELD_VISITOR.with(|held| {
            held.set((visitor, entry.tat));
            let out = check();
            entry.tat = held.get().1;
            out
        })
    }
}

impl StateStore for HeldVisitor {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        HELD_VISITOR.with(|held| {
            let (visitor, tat) = held.get();
            assert_eq!(visitor, *key, "the verdict holds this visitor's entry");
            let (out, tat) = f((tat != 0).then(|| Nanos::from(tat)))?;
            // 0 means "never charged".
            held.set((visitor, tat.as_u64().max(1)));
            Ok(out)
        })
    }
}

type VisitorLimit = RateLimiter<u64, HeldVisitor, AppClock, NoOpMiddleware<Duration>>;

/// How long a visitor the per-visitor limiter has charged is remembered
/// after their last click: its quota is per minute, so a minute after the
/// last click the state is a fresh visitor's again.
const LIMITED_MEMORY_MS: i64 = 60_000;

struct ProgramGuard {
    rules: FraudRules,
    /// Longest window (duplicate, burst) this program's visitors are kept.
    window_ms: i64,
    visitors: Visitors,
    visitor_link: Limit<(u64, u64)>,
    /// Keyed by visitor; its state lives in `visitors`.
    visitor: VisitorLimit,
    partner: Limit<u64>,
    /// Partners with their own limit.
    partner_overrides: HashMap<u64, Limit<u64>, FastHash>,
}

/// All in-memory fraud state.
pub struct Guard {
    clock: SharedClock,
    networks: Networks,
    programs: HashMap<String, ProgramGuard, FastHash>,
    /// Keys strings into the u64 map keys.
    hasher: FastHash,
    /// Hashes of user agents recently classified human (see
    /// [`Guard::user_agent_reason`]).
    human_agents: Box<[AtomicU64]>,
    /// Next visitor part [`Guard::prune_step`] sweeps.
    prune_cursor: AtomicUsize,
}

/// Slots in the table of user agents known to be human.
const HUMAN_AGENT_SLOTS: usize = 4096;

const AD_CLICK_IDS: &[&str] = &[
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "msclkid",
    "fbclid",
    "ttclid",
    "twclid",
    "li_fat_id",
    "yclid",
    "epik",
    "rdt_cid",
];
/// Search engines, by a label of their host (`www.google.co.uk`,
/// `search.brave.com`, `duckduckgo.com`).
const SEARCH_ENGINES: &[&str] = &[
    "google",
    "bing",
    "yahoo",
    "duckduckgo",
    "yandex",
    "baidu",
    "ecosia",
    "brave",
    "startpage",
    "qwant",
];

/// A visitor's last clicks, newest last, and their per-visitor limiter
/// state, kept small (56 bytes, 64 with its key: one cache line per slot
/// of [`visitors`]' full table): at tens of thousands of new visitors a
/// second, held for the longest window, the visitor tables are the largest
/// fraud state. Links are 32-bit
/// fingerprints (a collision can at worst merge two links' duplicate
/// windows for one visitor), partners 16-bit ones (a collision can at worst
/// hide one partner of a burst); times are [`Tick`]s.
#[derive(Default, Clone, Copy)]
struct Recent {
    links: [u32; RECENT],
    ticks: [Tick; RECENT],
    partners: [u16; RECENT],
    /// The per-visitor limiter's GCRA state (governor's nanoseconds since
    /// the limiter started); 0 until the visitor is first charged.
    tat: u64,
    /// Clicks over a visitor limit in `over_minute`.
    over: u16,
    /// Minute (epoch ms / 60,000, wrapping) the over-limit count is for.
    over_minute: u16,
    len: u8,
}

/// Time in 10 ms units, wrapping every 497 days: ages are wrapping
/// differences, exact for anything younger than that (entries live for one
/// window, minutes at most).
type Tick = u32;

fn tick(ms: i64) -> Tick {
    ms.div_euclid(10) as u32
}

/// Age of `t` at `now`, in ms.
fn age_ms(now: Tick, t: Tick) -> i64 {
    i64::from(now.wrapping_sub(t)) * 10
}

/// Clicks remembered per visitor: enough for the burst rule's default of
/// three partners and for duplicates.
const RECENT: usize = 4;

impl Recent {
    /// The remembered clicks, oldest first: (link, partner, tick).
    fn iter(&self) -> impl Iterator<Item = (u32, u16, Tick)> + '_ {
        (0..self.len as usize).map(|i| (self.links[i], self.partners[i], self.ticks[i]))
    }

    fn push(&mut self, (link, partner, tick): (u32, u16, Tick)) {
        if self.len as usize == RECENT {
            self.links.copy_within(1.., 0);
            self.partners.copy_within(1.., 0);
            self.ticks.copy_within(1.., 0);
            self.len -= 1;
        }
        let i = self.len as usize;
        (self.links[i], self.partners[i], self.ticks[i]) = (link, partner, tick);
        self.len += 1;
    }

    /// Age of the newest click, in ms.
    fn youngest_ms(&self, now: Tick) -> Option<i64> {
        self.iter().map(|c| age_ms(now, c.2)).min()
    }
}

/// A visitor's map key: the IPv4 address itself, or a 64-bit hash of the
/// IPv6 address (two visitors share state only on a hash collision,
/// about one chance in 10^7 among a million visitors).
fn visitor_key(ip: Option<IpAddr>, hasher: &FastHash) -> u64 {
    match ip.map(crate::net::canonical) {
        Some(IpAddr::V4(a)) => u64::from(u32::from(a)),
        Some(IpAddr::V6(a)) => hasher.hash_one(u128::from(a)) | 1 << 63,
        None => 0,
    }
}

/// Whether a host is a search engine's: one of its labels names one
/// (ASCII case ignored). Most referers are not: a label is compared only
/// with engines of its length.
fn is_search_engine(host: &str) -> bool {
    host.as_bytes()
        .split(|&b| b == b'.')
        .any(|label| names_one_of(SEARCH_ENGINES, label))
}

/// Whether `word` is one of `names`, ASCII case ignored (lengths first).
fn names_one_of(names: &[&str], word: &[u8]) -> bool {
    names
        .iter()
        .any(|n| n.len() == word.len() && n.as_bytes().eq_ignore_ascii_case(word))
}

/// The first parameter of a query string named after an ad platform's
/// click id (`gclid`, `msclkid`, …; ASCII case ignored).
fn ad_click_id(query: &str) -> Option<&str> {
    let mut at = 0;
    for pair in query.as_bytes().split(|&b| b == b'&') {
        let key_len = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
        if names_one_of(AD_CLICK_IDS, &pair[..key_len]) {
            // Cut at ASCII delimiters: on char boundaries.
            return Some(&query[at..at + key_len]);
        }
        at += pair.len() + 1;
    }
    None
}

/// The host of an absolute URL (`scheme://[user@]host[:port]/...`).
fn host_of(url: &str) -> Option<&str> {
    // Byte scans: the delimiters are ASCII, so every cut is on a char
    // boundary, and a short URL is not worth a substring searcher.
    let b = url.as_bytes();
    let start = b.windows(3).position(|w| w == b"://")? + 3;
    let rest = &b[start..];
    let end = rest
        .iter()
        .position(|&c| matches!(c, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let from = rest[..end]
        .iter()
        .rposition(|&c| c == b'@')
        .map_or(0, |at| at + 1);
    let to = rest[from..end]
        .iter()
        .position(|&c| c == b':')
        .map_or(end, |colon| from + colon);
    Some(&url[start + from..start + to])
}

impl Guard {
    /// Guards for `programs` (key → rules), on `clock`.
    pub fn new(
        programs: impl IntoIterator<Item = (String, FraudRules)>,
        clock: SharedClock,
    ) -> Self {
        let gclock = AppClock(clock.clone());
        let hasher = FastHash::default();
        let programs = programs
            .into_iter()
            .map(|(key, rules)| {
                let minute = Duration::from_secs(60);
                let partner_overrides = rules
                    .partner_limits
                    .iter()
                    .map(|(p, n)| {
                        (
                            hasher.hash_one(p.as_str()),
                            Limit::new(Duration::from_secs(1), *n, &gclock),
                        )
                    })
                    .collect();
                let g = ProgramGuard {
                    window_ms: (rules.duplicate_window_seconds as i64 * 1000)
                        .max(rules.burst_window_seconds as i64 * 1000)
                        .max(1),
                    visitor_link: Limit::new(minute, rules.visitor_link_per_minute, &gclock),
                    visitor: RateLimiter::new(
                        quota(minute, rules.visitor_per_minute),
                        HeldVisitor,
                        gclock.clone(),
                    ),
                    visitors: Visitors::new(SHARDS, PRUNE_PARTS),
                    partner: Limit::new(Duration::from_secs(1), rules.partner_per_second, &gclock),
                    partner_overrides,
                    rules,
                };
                (key, g)
            })
            .collect();
        Self {
            clock,
            networks: Networks::built_in(),
            programs,
            hasher,
            human_agents: (0..HUMAN_AGENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            prune_cursor: AtomicUsize::new(0),
        }
    }

    /// A program's rules.
    pub fn rules(&self, program: &str) -> Option<&FraudRules> {
        self.programs.get(program).map(|p| &p.rules)
    }

    /// Starts loading the memory a click from `ip` on `program` will
    /// touch (its visitor's slot), so that the cache miss overlaps the
    /// request's other work. A hint: calling it or not changes no verdict.
    pub fn prefetch(&self, program: &str, ip: IpAddr) {
        if let Some(pg) = self.programs.get(program).filter(|p| p.rules.enabled) {
            pg.visitors.prefetch(visitor_key(Some(ip), &self.hasher));
        }
    }

    /// The verdict on one click. Allocates only when a rule fires.
    pub fn click(&self, f: &ClickFacts<'_>) -> Verdict {
        let mut flags = Vec::new();
        let mut action = Action::Redirect;
        let Some(pg) = self.programs.get(f.program).filter(|p| p.rules.enabled) else {
            return Verdict { flags, action };
        };
        let r = &pg.rules;
        let now = f.now_ms.unwrap_or_else(|| self.clock.now_ms());
        let _instant = VerdictInstant::set(now);
        let visitor = visitor_key(f.ip, &self.hasher);
        let now_tick = tick(now);
        let link = self.hasher.hash_one(f.link);
        let partner = self.hasher.hash_one(f.partner);
        let (link32, partner16) = (link as u32, (partner >> 48) as u16);
        let mut flag = |reason, evidence: String| flags.push(Flag { reason, evidence });

        if let Some(e) = f.token_error {
            flag(
                Reason::TokenTampered,
                format!("attribution cookie refused: {e}"),
            );
        }
        // Bots.
        if f.head {
            flag(Reason::Bot, "HEAD request".into());
        }
        match f.user_agent {
            None => flag(Reason::Bot, "no user-agent".into()),
            Some(ua) => {
                if let Some(why) = self.user_agent_reason(ua, r.flag_app_clients) {
                    flag(Reason::Bot, why);
                }
            }
        }
        if r.require_browser_headers && !f.head {
            if f.accept.is_none() {
                flag(Reason::Bot, "no Accept header".into());
            } else if f.accept_language.is_none() {
                flag(Reason::Bot, "no Accept-Language header".into());
            }
        }
        if r.datacenter_is_bot {
            if let Some(provider) = f.ip.and_then(|ip| self.networks.provider(ip)) {
                flag(Reason::Bot, format!("source network belongs to {provider}"));
            }
        }
        // Stuffing: not a person navigating.
        if let Some(dest) = f
            .sec_fetch_dest
            .filter(|d| !d.eq_ignore_ascii_case("document"))
        {
            flag(Reason::Stuffing, format!("sec-fetch-dest: {dest}"));
        }
        if let Some(mode) = f
            .sec_fetch_mode
            .filter(|m| m.eq_ignore_ascii_case("no-cors"))
        {
            flag(Reason::Stuffing, format!("sec-fetch-mode: {mode}"));
        }
        for (name, v) in [("sec-purpose", f.sec_purpose), ("purpose", f.purpose)] {
            if let Some(v) = v.filter(|v| {
                let v = v.to_ascii_lowercase();
                v.contains("prefetch") || v.contains("prerender") || v.contains("preview")
            }) {
                flag(Reason::Stuffing, format!("{name}: {v}"));
            }
        }
        if r.require_partner_referer {
            let host = f.referer.and_then(host_of).map(|h| h.to_ascii_lowercase());
            let ok = host.as_deref().is_some_and(|h| {
                f.partner_hosts
                    .iter()
                    .any(|p| h == p || h.ends_with(&format!(".{p}")))
            });
            if !ok {
                flag(
                    Reason::Stuffing,
                    format!(
                        "referer {:?} is not one of the partner's websites",
                        f.referer.unwrap_or("")
                    ),
                );
            }
        }
        // Rate limits. A visitor far beyond them (more than
        // `block_multiplier` × the per-link limit in a minute) gets a 429; a
        // partner-wide surge only flags, so real visitors are never refused
        // for someone else's traffic.
        // A visitor's first click (and first on a link) is charged with
        // the second, so one-click visitors never touch the limiter maps.
        let charge = |seen: usize| match seen {
            0 => 0,
            1 => 2,
            _ => 1,
        };
        // Duplicates, bursts and the per-visitor limits, all under one
        // lookup of the visitor's entry.
        let (over_link, over_visitor) = {
            let dup_window = r.duplicate_window_seconds as i64 * 1000;
            let burst_window = r.burst_window_seconds as i64 * 1000;
            pg.visitors.with(visitor, |recent| {
                let seen_before = (recent.len, recent.iter().filter(|c| c.0 == link32).count());
                let last_here = recent
                    .iter()
                    .filter(|c| c.0 == link32)
                    .map(|c| age_ms(now_tick, c.2))
                    .min();
                if let Some(age) = last_here.filter(|&a| a <= dup_window) {
                    flag(
                        Reason::Duplicate,
                        format!("same visitor on this link {}s ago", age / 1000),
                    );
                }
                recent.push((link32, partner16, now_tick));
                if r.burst_partners > 1 {
                    let mut partners = [0u16; RECENT];
                    let mut n = 0;
                    for c in recent
                        .iter()
                        .filter(|c| age_ms(now_tick, c.2) <= burst_window)
                    {
                        if !partners[..n].contains(&c.1) {
                            partners[n] = c.1;
                            n += 1;
                        }
                    }
                    if n >= r.burst_partners {
                        flag(
                            Reason::Stuffing,
                            format!(
                                "visitor hit {n} partners' links within {}s",
                                r.burst_window_seconds
                            ),
                        );
                    }
                }
                let over_link = pg
                    .visitor_link
                    .over(&(visitor, link), charge(seen_before.1));
                let over_visitor = HeldVisitor::charge(recent, visitor, || {
                    over_by(&pg.visitor, &visitor, charge(seen_before.0 as usize))
                });
                if over_link || over_visitor {
                    let minute = now.div_euclid(60_000) as u16;
                    if recent.over_minute != minute {
                        recent.over_minute = minute;
                        recent.over = 0;
                    }
                    recent.over = recent.over.saturating_add(1);
                    let allowance = r
                        .visitor_link_per_minute
                        .saturating_mul(r.block_multiplier.max(1).saturating_sub(1));
                    if u32::from(recent.over) > allowance {
                        action = Action::TooMany;
                    }
                }
                (over_link, over_visitor)
            })
        };
        if over_link {
            flag(
                Reason::RateLimited,
                format!(
                    "visitor on this link: more than {} clicks per minute",
                    r.visitor_link_per_minute
                ),
            );
        }
        if over_visitor {
            flag(
                Reason::RateLimited,
                format!(
                    "visitor: more than {} clicks per minute",
                    r.visitor_per_minute
                ),
            );
        }
        let (over_partner, n) = match pg.partner_overrides.get(&partner) {
            Some(l) => (
                l.over(&partner, 1),
                r.partner_limits
                    .get(f.partner)
                    .copied()
                    .unwrap_or(r.partner_per_second),
            ),
            None => (pg.partner.over(&partner, 1), r.partner_per_second),
        };
        if over_partner {
            flag(
                Reason::RateLimited,
                format!("partner: more than {n} clicks per second"),
            );
        }
        // Paid search.
        if r.paid_search != PaidSearchPolicy::Allow {
            let mut hit = None;
            if let Some(key) = f.query.and_then(ad_click_id) {
                hit = Some(format!("ad click id {key} on the tracked link"));
            }
            if hit.is_none() && !r.brand_terms.is_empty() {
                if let Some(referer) = f.referer {
                    let host = host_of(referer).unwrap_or_default();
                    // Most clicks with a referer are not from a search
                    // engine: match without lowering the host into a String.
                    if is_search_engine(host) {
                        let host = host.to_ascii_lowercase();
                        let q = referer.split_once('?').map(|(_, q)| q).unwrap_or_default();
                        let terms: String = url::form_urlencoded::parse(q.as_bytes())
                            .filter(|(k, _)| {
                                matches!(k.as_ref(), "q" | "p" | "text" | "query" | "wd")
                            })
                            .map(|(_, v)| v.to_lowercase())
                            .collect::<Vec<_>>()
                            .join(" ");
                        if let Some(term) =
                            r.brand_terms.iter().find(|t| terms.contains(t.as_str()))
                        {
                            hit = Some(format!("search for {term:?} on {host}"));
                        }
                    }
                }
            }
            if let Some(evidence) = hit {
                flag(Reason::PaidSearch, evidence);
                if r.paid_search == PaidSearchPolicy::Block && action == Action::Redirect {
                    action = Action::Block;
                }
            }
        }
        Verdict { flags, action }
    }

    /// Why a user agent is a bot's, or `None` for a browser's. Real traffic
    /// repeats a few thousand browser strings: their seeded 64-bit hashes
    /// sit in a small direct-mapped table, and a hit skips the classifier's
    /// scan (a bot's string is classified every time, for its evidence).
    fn user_agent_reason(&self, agent: &str, flag_app_clients: bool) -> Option<String> {
        // Low bit set: 0 marks an empty slot.
        let h = self.hasher.hash_one(agent) | 1;
        let slot = &self.human_agents[(h >> 32) as usize % HUMAN_AGENT_SLOTS];
        if slot.load(Ordering::Relaxed) == h {
            return None;
        }
        match ua::classify(agent) {
            ua::Class::Human => {
                slot.store(h, Ordering::Relaxed);
                None
            }
            ua::Class::AppClient(why) => flag_app_clients.then_some(why),
            ua::Class::Bot(why) => Some(why),
        }
    }

    /// Drops idle visitors' limiter state and expired window entries, all
    /// at once.
    pub fn prune(&self) {
        for part in 0..PRUNE_PARTS {
            self.prune_window(part);
        }
        self.prune_limiters();
    }

    /// How long one whole sweep of the visitor windows should take: an
    /// eighth of the shortest window among the programs checked, from one
    /// to ten seconds. An expired visitor stays at most that long, so the
    /// tables hold up to an eighth more than the window needs; sweeping a
    /// 30-second window every second instead visited each visitor thirty
    /// times (`prune_window` 1.9% of the load test's samples, 0.4% now).
    pub fn sweep_period(&self) -> Duration {
        let shortest = self
            .programs
            .values()
            .filter(|g| g.rules.enabled)
            .map(|g| g.window_ms)
            .min()
            .unwrap_or(0);
        Duration::from_millis(u64::try_from(shortest / 8).unwrap_or(0))
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// One step of pruning: one window part, and the limiters once a
    /// round. Called [`PRUNE_PARTS`] times per [`Guard::sweep_period`], it
    /// sweeps everything once a period in short pieces.
    pub fn prune_step(&self) {
        let part = self.prune_cursor.fetch_add(1, Ordering::Relaxed) % PRUNE_PARTS;
        self.prune_window(part);
        if part == 0 {
            self.prune_limiters();
        }
    }

    fn prune_window(&self, part: usize) {
        let now = tick(self.clock.now_ms());
        for g in self.programs.values() {
            let keep = g.window_ms;
            let keep_limited = keep.max(LIMITED_MEMORY_MS);
            g.visitors.retain_part(part, |v| {
                let keep = if v.tat != 0 { keep_limited } else { keep };
                v.youngest_ms(now).is_some_and(|a| a <= keep)
            });
        }
    }

    fn prune_limiters(&self) {
        for g in self.programs.values() {
            g.visitor_link.prune();
            g.partner.prune();
            for l in g.partner_overrides.values() {
                l.prune();
            }
        }
    }

    /// Keys held by the limiters and visitor maps, for the limiter-keys
    /// metric.
    pub fn key_count(&self) -> usize {
        self.programs
            .values()
            .map(|g| g.visitor_link.len() + g.partner.len() + g.visitors.len())
            .sum()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("programs", &self.programs.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn window_entries_stay_small() {
        // The per-visitor entry is the largest fraud state; keep it at
        // 56 bytes (64 with its key: one cache line a slot; visitors seen
        // once take 16 bytes, see visitors.rs).
        assert_eq!(std::mem::size_of::<Recent>(), 56);
    }

    #[test]
    fn host_of_takes_the_authority_without_user_and_port() {
        for (url, host) in [
            ("https://blog.example/best?x=1", Some("blog.example")),
            ("http://user:pw@Shop.Example:8080/a", Some("Shop.Example")),
            ("https://a.example?q#f", Some("a.example")),
            ("https://a.example#f/x", Some("a.example")),
            ("https://", Some("")),
            ("blog.example/path", None),
        ] {
            assert_eq!(host_of(url), host, "{url}");
        }
    }

    proptest::proptest! {
        /// The one-pass scan finds what splitting on each delimiter in
        /// turn finds.
        #[test]
        fn host_of_agrees_with_splitting(url in "[a:/@?#.]{0,24}") {
            let split = url.split_once("://").map(|(_, rest)| {
                let host = rest.split(['/', '?', '#']).next().unwrap();
                let host = host.rsplit('@').next().unwrap();
                host.split(':').next().unwrap()
            });
            proptest::prop_assert_eq!(host_of(&url), split);
        }

        /// The byte scan finds the parameter that splitting on `&` and
        /// `=` finds.
        #[test]
        fn ad_click_id_agrees_with_splitting(q in "(gclid|GCLID|msclkid|gcli|x|é|=|&){0,8}") {
            let split = q.split('&').map(|p| p.split('=').next().unwrap()).find(|key| {
                AD_CLICK_IDS.iter().any(|k| key.eq_ignore_ascii_case(k))
            });
            proptest::prop_assert_eq!(ad_click_id(&q), split);
        }
    }

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

    fn guard(clock: &Arc<crate::clock::FakeClock>) -> Guard {
        Guard::new(
            [("p".to_string(), FraudRules::default())],
            clock.clone() as SharedClock,
        )
    }

    fn clock() -> Arc<crate::clock::FakeClock> {
        Arc::new(crate::clock::FakeClock::new(
            "2026-03-01T00:00:00Z".parse().unwrap(),
        ))
    }

    fn click_from<'a>(ip: &str, link: &'a str, hosts: &'a [String]) -> ClickFacts<'a> {
        ClickFacts {
            ip: Some(ip.parse().unwrap()),
            user_agent: Some(FIREFOX),
            accept: Some("text/html"),
            accept_language: Some("en"),
            program: "p",
            partner: "p_1",
            link,
            partner_hosts: hosts,
            ..ClickFacts::default()
        }
    }

    #[test]
    fn a_sweep_takes_an_eighth_of_the_shortest_checked_window() {
        let with = |windows: &[(u64, bool)]| {
            let programs = windows.iter().enumerate().map(|(i, &(s, enabled))| {
                let rules = FraudRules {
                    duplicate_window_seconds: s,
                    burst_window_seconds: 1,
                    enabled,
                    ..FraudRules::default()
                };
                (format!("p{i}"), rules)
            });
            Guard::new(programs, clock() as SharedClock).sweep_period()
        };
        assert_eq!(
            guard(&clock()).sweep_period(),
            Duration::from_millis(3750),
            "the default 30 s window"
        );
        assert_eq!(
            with(&[(120, true), (40, true), (16, false)]),
            Duration::from_secs(5),
            "the shortest checked window"
        );
        assert_eq!(with(&[(4, true)]), Duration::from_secs(1), "at least 1 s");
        assert_eq!(
            with(&[(3600, true)]),
            Duration::from_secs(10),
            "at most 10 s"
        );
        assert_eq!(
            with(&[(60, false)]),
            Duration::from_secs(1),
            "nothing checked"
        );
    }

    #[test]
    fn known_human_agents_never_hide_a_bot() {
        let g = guard(&clock());
        let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        for _ in 0..3 {
            assert_eq!(g.user_agent_reason(FIREFOX, true), None);
            assert!(g.user_agent_reason(bot, true).is_some());
        }
    }

    #[test]
    fn charged_visitors_are_kept_for_the_limiters_minute() {
        let clock = clock();
        let g = guard(&clock);
        let hosts = Vec::new();
        // One click: only the 30 s duplicate window remembers it. Three
        // clicks: the per-visitor limiter has charged the visitor.
        let first = g.click(&click_from("100.64.0.1", "a", &hosts));
        assert!(first.flags.is_empty(), "{:?}", first.flags);
        for link in ["a", "b", "c"] {
            g.click(&click_from("100.64.0.2", link, &hosts));
        }
        clock.advance(chrono::Duration::seconds(40));
        g.prune();
        assert_eq!(
            g.programs["p"].visitors.len(),
            1,
            "the charged visitor stays"
        );
        clock.advance(chrono::Duration::seconds(21));
        g.prune();
        assert_eq!(g.key_count(), 0, "a minute on, both are forgotten");
    }

    #[test]
    fn the_visitor_limit_holds_across_links() {
        let clock = clock();
        let g = guard(&clock);
        let hosts = Vec::new();
        let links: Vec<String> = (0..61).map(|i| format!("l{i}")).collect();
        let limited: Vec<bool> = links
            .iter()
            .map(|l| {
                g.click(&click_from("100.64.0.3", l, &hosts))
                    .flags
                    .iter()
                    .any(|f| f.reason == Reason::RateLimited)
            })
            .collect();
        // 60 a minute are allowed at once; the 61st is over.
        assert!(limited[..60].iter().all(|l| !l), "{limited:?}");
        assert!(limited[60]);
    }

    #[test]
    fn search_engine_hosts_match_in_any_case() {
        assert!(is_search_engine("WWW.Google.COM"));
        assert!(is_search_engine("www.google.co.uk"));
        assert!(is_search_engine("search.brave.com"));
        assert!(is_search_engine("duckduckgo.com"));
        assert!(!is_search_engine("goog.le"));
        assert!(!is_search_engine("googleblog.example"));
        assert!(!is_search_engine("blog.example"));
        assert!(!is_search_engine(""));
    }

    #[test]
    fn ages_survive_the_tick_wrapping() {
        let before_wrap = (u32::MAX as i64 - 5) * 10;
        let after_wrap = before_wrap + 2_000;
        assert_eq!(age_ms(tick(after_wrap), tick(before_wrap)), 2_000);
        assert_eq!(age_ms(tick(1_000), tick(1_000)), 0);
    }

    #[test]
    fn ipv4_and_ipv6_visitors_never_share_a_key() {
        let h = FastHash::default();
        let v4 = visitor_key(Some("203.0.113.9".parse().unwrap()), &h);
        let v6 = visitor_key(Some("2001:db8::9".parse().unwrap()), &h);
        let mapped = visitor_key(Some("::ffff:203.0.113.9".parse().unwrap()), &h);
        assert_eq!(v4, 203 << 24 | 113 << 8 | 9);
        assert_eq!(mapped, v4, "IPv4-mapped addresses are the IPv4 visitor");
        assert!(v6 >= 1 << 63);
    }
}
