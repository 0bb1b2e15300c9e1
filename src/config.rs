//! The one place settings are read and validated.
//!
//! Layers, later winning: built-in defaults and program presets, the TOML
//! file given with `--config`, then `REFEDGE_*` environment variables
//! (`REFEDGE_LISTEN`, `REFEDGE_CLICKS__QUEUE_CAPACITY`,
//! `REFEDGE_PROGRAMS__KRISPCALL__COOKIE_DAYS`: `__` steps into a table).
//! Every bad or unknown setting is collected, so a user sees all of them at
//! once instead of fixing one per restart.

use crate::commission::review::{ReviewFlag, ReviewPolicy};
use crate::commission::rules::Rules;
use crate::net::IpNet;
use crate::program::{Attribution, HostPattern, Program, DEFAULT_COOKIE_DAYS, PRESETS};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Prefix of environment variables that are settings.
pub const ENV_PREFIX: &str = "REFEDGE_";

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Folder for the sled database, keyring and admin token.
    pub data_dir: PathBuf,
    /// Base of the public tracked URLs (`{public_url}/r/{code}`); defaults
    /// to `http://{listen}` once bound.
    pub public_url: Option<String>,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    /// `tracing` filter (`info`, `refedge=debug`, ...).
    pub log: String,
    /// How log lines are written: `text` (colour only on a terminal) or
    /// `json` (one object a line, for log shippers).
    pub log_format: LogFormat,
    /// The listening socket's accept backlog: connections the kernel
    /// holds complete while the server is busy (a burst of connects beyond
    /// it waits for SYN retries, a second or more). Capped by the kernel's
    /// `net.core.somaxconn`.
    pub listen_backlog: u32,
    /// Admin bearer token; generated into the data dir when unset.
    pub admin_token: Option<String>,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// A connection that in this long begins or finishes no request and
    /// writes no byte, with no request in progress, is closed (one to two
    /// such periods after it went quiet): idle keep-alive connections and
    /// clients that never finish a request head.
    pub idle_timeout_ms: u64,
    /// Attribution cookie settings.
    pub cookie: CookieConfig,
    /// Click log queue and batching.
    pub clicks: ClickLogConfig,
    /// Calculator snapshots: after this many applied events (and every 5 s
    /// when anything changed). Bounds the replay after a crash.
    pub snapshot_every_events: u64,
    /// `/readyz` answers 503 when the calculator is more than this many
    /// events behind the log.
    pub calculator_max_lag_events: u64,
    /// `/readyz` answers 503 when events wait and the calculator has
    /// applied none for this long.
    pub calculator_stall_seconds: u64,
    /// Signing keys given in config; when empty the keyring lives in the
    /// data dir and is generated on first start.
    pub signing_keys: Vec<ConfiguredKey>,
    /// Programs by key.
    pub programs: BTreeMap<String, Program>,
    /// Cluster mode (NATS JetStream); `None` runs one process on its own.
    pub cluster: Option<ClusterConfig>,
    /// The staff console and the partner portal.
    pub console: ConsoleConfig,
    /// Webhooks and partner postbacks out (`[webhooks]`).
    pub webhooks: crate::webhooks::Settings,
}

/// The staff console (`/console/`) and partner portal (`/portal/`)
/// (`[console]`).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// A session unused for this long is signed out.
    pub session_idle_minutes: u64,
    /// A session ends this long after sign-in, however busy.
    pub session_max_hours: u64,
    /// Adds `Secure` to the session cookie; turn on behind HTTPS.
    pub secure_cookies: bool,
    /// Sign-in attempts a client address may make a minute.
    pub signin_per_minute: u32,
    /// How long a partner's one-time sign-in link stays valid.
    pub signin_link_hours: u64,
}

/// What a node does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves redirects and takes events; forwards money reads.
    Edge,
    /// Keeps the ledger: replicates the event stream and applies it.
    Calculator,
    /// Both.
    All,
}

impl Role {
    /// Whether this node keeps a calculator.
    pub fn calculates(self) -> bool {
        matches!(self, Role::Calculator | Role::All)
    }

    /// The setting's spelling.
    pub fn label(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Calculator => "calculator",
            Role::All => "all",
        }
    }
}

/// Cluster settings (`[cluster]`); present when `cluster.nats_url` is set.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated (`nats://10.0.0.1:4222,...`).
    pub nats_url: String,
    /// What this node does.
    pub role: Role,
    /// This node's name; generated and kept in the data dir when unset.
    pub node_id: Option<String>,
    /// Replicas of each stream and bucket (1, or 3 on a three-server NATS
    /// cluster).
    pub replicas: usize,
    /// NATS credentials file (`.creds`, from `nsc`), when the server
    /// requires them.
    pub credentials_file: Option<PathBuf>,
    /// NATS user and password, when the server uses them instead.
    pub user: Option<String>,
    /// See `user`.
    pub password: Option<String>,
    /// PEM file of the CA that signed the NATS server's certificate; its
    /// presence requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// The URL other nodes use to reach this node's API (money reads are
    /// forwarded to the active calculator there); default
    /// `http://{listen}` once bound.
    pub advertise_url: Option<String>,
    /// A calculator's lease lapses when not renewed for this long; the
    /// standby takes over after it.
    pub lease_seconds: u64,
    /// How long the click stream keeps clicks, in days (at least the
    /// longest attribution window).
    pub clicks_max_age_days: u64,
    /// How long `POST /api/v1/events` waits for a signup's click that
    /// another edge served and has not shipped yet, before deciding on
    /// what is known (the reason says so).
    pub attribution_wait_seconds: u64,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

/// The attribution cookie.
#[derive(Debug, Clone)]
pub struct CookieConfig {
    /// Cookie name.
    pub name: String,
    /// Adds `Secure`; turn on whenever refedge is served over HTTPS.
    pub secure: bool,
    /// Adds `Domain=`, to share the cookie with the merchant's subdomains.
    pub domain: Option<String>,
}

/// The click log's bounded queue and group commit.
#[derive(Debug, Clone)]
pub struct ClickLogConfig {
    /// Clicks that may wait in memory; beyond this they are dropped and
    /// counted (the visitor is still redirected).
    pub queue_capacity: usize,
    /// Most clicks written in one batch (one flush).
    pub batch_max: usize,
    /// Longest a click waits for its batch to fill, in milliseconds.
    pub flush_interval_ms: u64,
    /// Bits of an IPv4 address kept on disk as the visitor's network.
    pub ip_prefix_v4: u8,
    /// Bits of an IPv6 address kept on disk as the visitor's network.
    pub ip_prefix_v6: u8,
}

/// A signing key supplied by configuration.
#[derive(Clone)]
pub struct ConfiguredKey {
    /// Key id carried in every token it signs.
    pub id: u32,
    /// HMAC-SHA256 secret, at least 32 bytes.
    pub secret: Vec<u8>,
    /// A retired key verifies nothing.
    pub retired: bool,
}

impl fmt::Debug for ConfiguredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredKey")
            .field("id", &self.id)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted setting name (`clicks.batch_max`).
    pub setting: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Every bad setting found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} invalid setting(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {}: {}", e.setting, e.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Defaults and presets only, with data in `data_dir`.
    pub fn defaults(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = Self::load(None, std::iter::empty()).expect("built-in defaults are valid");
        c.data_dir = data_dir.into();
        c
    }

    /// Reads the optional TOML file, then overlays `REFEDGE_*` pairs from
    /// `env` (other names are ignored).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut root = Self::preset_root();
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<Table>() {
                    Ok(t) => merge(&mut root, t),
                    Err(e) => errors.push(err("--config", format!("{}: {e}", path.display()))),
                },
                Err(e) => errors.push(err("--config", format!("{}: {e}", path.display()))),
            }
        }
        Self::finish_load(root, errors, env)
    }

    /// Settings from TOML text (as a `--config` file holds) over the
    /// defaults, with no environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut root = Self::preset_root();
        let mut errors = Vec::new();
        match text.parse::<Table>() {
            Ok(t) => merge(&mut root, t),
            Err(e) => errors.push(err("--config", e.to_string())),
        }
        Self::finish_load(root, errors, std::iter::empty())
    }

    /// The presets as a settings table.
    fn preset_root() -> Table {
        let mut root = Table::new();
        let mut programs = Table::new();
        for (key, text) in PRESETS {
            let t: Table = text.parse().expect("presets are valid TOML");
            programs.insert((*key).to_string(), Value::Table(t));
        }
        root.insert("programs".into(), Value::Table(programs));
        root
    }

    fn finish_load(
        mut root: Table,
        mut errors: Vec<ConfigError>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.iter().any(|p| p.is_empty()) {
                errors.push(err(&name, "is not a setting name".into()));
                continue;
            }
            set_path(&mut root, &path, env_value(value));
        }

        let mut r = Reader { errors };
        let config = r.config(root);
        if r.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(r.errors))
        }
    }
}

fn err(setting: &str, reason: String) -> ConfigError {
    ConfigError {
        setting: setting.to_string(),
        reason,
    }
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else
/// replaces.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// An environment value: a TOML scalar or array when it parses as one
/// (`60`, `true`, `["a.com"]`), else the string itself.
fn env_value(raw: String) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (Value::Integer(_) | Value::Boolean(_) | Value::Array(_))) => v,
            _ => Value::String(raw),
        },
        Err(_) => Value::String(raw),
    }
}

fn set_path(root: &mut Table, path: &[String], value: Value) {
    let (last, parents) = path.split_last().expect("path is non-empty");
    let mut t = root;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        t = entry.as_table_mut().expect("just made a table");
    }
    t.insert(last.clone(), value);
}

/// Pulls typed settings out of a table, recording what is wrong and
/// returning defaults so reading can continue.
struct Reader {
    errors: Vec<ConfigError>,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

impl Reader {
    fn bad(&mut self, setting: String, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            setting,
            reason: reason.into(),
        });
    }

    /// Every key left in `t` was not consumed: it is not a setting.
    fn finish(&mut self, t: Table, prefix: &str) {
        for k in t.keys() {
            self.bad(join(prefix, k), "unknown setting");
        }
    }

    fn string(&mut self, t: &mut Table, prefix: &str, key: &str) -> Option<String> {
        match t.remove(key)? {
            Value::String(s) => Some(s),
            Value::Integer(i) => Some(i.to_string()),
            other => {
                self.bad(
                    join(prefix, key),
                    format!("must be a string, got {}", other.type_str()),
                );
                None
            }
        }
    }

    fn uint(
        &mut self,
        t: &mut Table,
        prefix: &str,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        let name = join(prefix, key);
        let v = match t.remove(key) {
            None => return default,
            Some(Value::Integer(i)) => u64::try_from(i).ok(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match v {
            Some(v) if (min..=max).contains(&v) => v,
            _ => {
                self.bad(name, format!("must be a whole number from {min} to {max}"));
                default
            }
        }
    }

    fn boolean(&mut self, t: &mut Table, prefix: &str, key: &str, default: bool) -> bool {
        match t.remove(key) {
            None => default,
            Some(Value::Boolean(b)) => b,
            Some(Value::String(s)) if matches!(s.as_str(), "true" | "1" | "yes") => true,
            Some(Value::String(s)) if matches!(s.as_str(), "false" | "0" | "no") => false,
            Some(_) => {
                self.bad(join(prefix, key), "must be true or false");
                default
            }
        }
    }

    /// A list: a TOML array of strings, or a comma-separated string (the
    /// form an environment variable can carry).
    fn list(&mut self, t: &mut Table, prefix: &str, key: &str) -> Option<Vec<String>> {
        match t.remove(key)? {
            Value::String(s) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s),
                        _ => self.bad(format!("{}[{i}]", join(prefix, key)), "must be a string"),
                    }
                }
                Some(out)
            }
            _ => {
                self.bad(join(prefix, key), "must be a list of strings");
                None
            }
        }
    }

    fn table(&mut self, t: &mut Table, prefix: &str, key: &str) -> Table {
        match t.remove(key) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(_) => {
                self.bad(join(prefix, key), "must be a table");
                Table::new()
            }
        }
    }

    fn config(&mut self, mut root: Table) -> Config {
        let listen = match self.string(&mut root, "", "listen") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(s) => s.parse().unwrap_or_else(|_| {
                self.bad(
                    "listen".into(),
                    format!("{s:?} is not an address like 127.0.0.1:8080"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
        };
        let data_dir = PathBuf::from(
            self.string(&mut root, "", "data_dir")
                .unwrap_or_else(|| "./refedge-data".into()),
        );
        let public_url = self.string(&mut root, "", "public_url").and_then(|s| {
            let trimmed = s.trim_end_matches('/').to_string();
            match url::Url::parse(&trimmed) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(trimmed)
                }
                _ => {
                    self.bad("public_url".into(), "must be an absolute http(s) URL");
                    None
                }
            }
        });
        let workers = self.uint(&mut root, "", "workers", 0, 0, 1024) as usize;
        let log = self
            .string(&mut root, "", "log")
            .unwrap_or_else(|| "info".into());
        let log_format = match self.string(&mut root, "", "log_format").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.bad(
                    "log_format".into(),
                    format!("{other:?} is not a log format; use text or json"),
                );
                LogFormat::Text
            }
        };
        let listen_backlog = self.uint(&mut root, "", "listen_backlog", 4096, 1, 65_535) as u32;
        let admin_token = self.string(&mut root, "", "admin_token");
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            self.bad("admin_token".into(), "must be at least 16 characters");
        }
        let mut trusted_proxies = Vec::new();
        for (i, s) in self
            .list(&mut root, "", "trusted_proxies")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match s.parse::<IpNet>() {
                Ok(n) => trusted_proxies.push(n),
                Err(e) => self.bad(format!("trusted_proxies[{i}]"), format!("{s:?} {e}")),
            }
        }
        let max_body_bytes =
            self.uint(&mut root, "", "max_body_bytes", 1 << 20, 1024, 64 << 20) as usize;
        let idle_timeout_ms = self.uint(&mut root, "", "idle_timeout_ms", 10_000, 100, 3_600_000);

        let mut c = self.table(&mut root, "", "cookie");
        let cookie = CookieConfig {
            name: self
                .string(&mut c, "cookie", "name")
                .unwrap_or_else(|| "refedge_attr".into()),
            secure: self.boolean(&mut c, "cookie", "secure", false),
            domain: self
                .string(&mut c, "cookie", "domain")
                .filter(|d| !d.is_empty()),
        };
        if !cookie
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            || cookie.name.is_empty()
        {
            self.bad(
                "cookie.name".into(),
                "may only hold letters, digits, '_' and '-'",
            );
        }
        if let Some(d) = &cookie.domain {
            if HostPattern::parse(d.trim_start_matches('.')).is_none() {
                self.bad(
                    "cookie.domain".into(),
                    format!("{d:?} is not a domain name"),
                );
            }
        }
        self.finish(c, "cookie");

        let mut k = self.table(&mut root, "", "clicks");
        let clicks = ClickLogConfig {
            queue_capacity: self.uint(&mut k, "clicks", "queue_capacity", 65_536, 1, 1 << 24)
                as usize,
            batch_max: self.uint(&mut k, "clicks", "batch_max", 4096, 1, 1 << 20) as usize,
            flush_interval_ms: self.uint(&mut k, "clicks", "flush_interval_ms", 5, 1, 10_000),
            ip_prefix_v4: self.uint(&mut k, "clicks", "ip_prefix_v4", 24, 0, 32) as u8,
            ip_prefix_v6: self.uint(&mut k, "clicks", "ip_prefix_v6", 48, 0, 128) as u8,
        };
        self.finish(k, "clicks");

        let signing_keys = self.signing_keys(&mut root);
        let mut calc = self.table(&mut root, "", "calculator");
        let snapshot_every_events = self.uint(
            &mut calc,
            "calculator",
            "snapshot_every_events",
            20_000,
            1,
            10_000_000,
        );
        let calculator_max_lag_events = self.uint(
            &mut calc,
            "calculator",
            "max_lag_events",
            100_000,
            1,
            u64::from(u32::MAX),
        );
        let calculator_stall_seconds =
            self.uint(&mut calc, "calculator", "stall_seconds", 30, 1, 86_400);
        self.finish(calc, "calculator");

        let programs_table = self.table(&mut root, "", "programs");
        let mut programs = BTreeMap::new();
        for (key, value) in programs_table {
            let prefix = format!("programs.{key}");
            let valid_key = !key.is_empty()
                && key.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid_key {
                self.bad(prefix.clone(), "program keys use a-z, 0-9, '_' and '-'");
            }
            match value {
                Value::Table(t) => {
                    let p = self.program(key.clone(), t, &prefix);
                    programs.insert(key, p);
                }
                _ => self.bad(prefix, "must be a table"),
            }
        }
        if programs.is_empty() {
            self.bad("programs".into(), "at least one program is needed");
        }
        let cluster = self.cluster(&mut root);
        let mut t = self.table(&mut root, "", "console");
        let console = ConsoleConfig {
            session_idle_minutes: self.uint(&mut t, "console", "session_idle_minutes", 30, 1, 1440),
            session_max_hours: self.uint(&mut t, "console", "session_max_hours", 12, 1, 720),
            secure_cookies: self.boolean(&mut t, "console", "secure_cookies", false),
            signin_per_minute: self.uint(&mut t, "console", "signin_per_minute", 10, 1, 10_000)
                as u32,
            signin_link_hours: self.uint(&mut t, "console", "signin_link_hours", 72, 1, 720),
        };
        self.finish(t, "console");
        let webhooks = self.webhooks(&mut root);
        self.finish(root, "");

        Config {
            listen,
            data_dir,
            public_url,
            workers,
            log,
            log_format,
            listen_backlog,
            admin_token,
            trusted_proxies,
            max_body_bytes,
            idle_timeout_ms,
            cookie,
            clicks,
            snapshot_every_events,
            calculator_max_lag_events,
            calculator_stall_seconds,
            signing_keys,
            programs,
            cluster,
            console,
            webhooks,
        }
    }

    /// `[webhooks]`: each attempt's timeout, the first retry's wait (it
    /// doubles), how long a delivery is retried, the failures in a row
    /// that disable an endpoint, and whether postbacks may target private
    /// addresses (tests only).
    fn webhooks(&mut self, root: &mut Table) -> crate::webhooks::Settings {
        let p = "webhooks";
        let mut t = self.table(root, "", p);
        let ms = std::time::Duration::from_millis;
        let s = crate::webhooks::Settings {
            timeout: ms(self.uint(&mut t, p, "timeout_ms", 10_000, 100, 120_000)),
            retry_base: ms(self.uint(&mut t, p, "retry_base_ms", 30_000, 10, 3_600_000)),
            max_age: std::time::Duration::from_secs(
                self.uint(&mut t, p, "max_age_hours", 24, 1, 24 * 30) * 3600,
            ),
            disable_after: self.uint(&mut t, p, "disable_after_failures", 20, 1, 10_000) as u32,
            allow_private_targets: self.boolean(&mut t, p, "allow_private_targets", false),
        };
        self.finish(t, p);
        s
    }

    fn cluster(&mut self, root: &mut Table) -> Option<ClusterConfig> {
        let mut t = self.table(root, "", "cluster");
        let p = "cluster";
        let nats_url = self.string(&mut t, p, "nats_url");
        let role = match self.string(&mut t, p, "role").as_deref() {
            None | Some("all") => Role::All,
            Some("edge") => Role::Edge,
            Some("calculator") => Role::Calculator,
            Some(other) => {
                self.bad(
                    "cluster.role".into(),
                    format!("{other:?} is not edge, calculator or all"),
                );
                Role::All
            }
        };
        let node_id = self.string(&mut t, p, "node_id");
        if let Some(id) = &node_id {
            if !is_node_id(id) {
                self.bad(
                    "cluster.node_id".into(),
                    "1 to 64 characters: a-z, A-Z, 0-9, '_' and '-'",
                );
            }
        }
        let replicas = self.uint(&mut t, p, "replicas", 1, 1, 5) as usize;
        let credentials_file = self
            .string(&mut t, p, "credentials_file")
            .map(PathBuf::from);
        let user = self.string(&mut t, p, "user");
        let password = self.string(&mut t, p, "password");
        if user.is_some() != password.is_some() {
            self.bad("cluster.user".into(), "user and password are set together");
        }
        let tls_ca_file = self.string(&mut t, p, "tls_ca_file").map(PathBuf::from);
        let advertise_url = self.string(&mut t, p, "advertise_url").and_then(|s| {
            let s = s.trim_end_matches('/').to_string();
            if s.starts_with("http://") && url::Url::parse(&s).is_ok_and(|u| u.path() == "/") {
                Some(s)
            } else {
                self.bad(
                    "cluster.advertise_url".into(),
                    format!("{s:?} is not an http://host:port URL"),
                );
                None
            }
        });
        let lease_seconds = self.uint(&mut t, p, "lease_seconds", 5, 2, 60);
        let clicks_max_age_days = self.uint(&mut t, p, "clicks_max_age_days", 400, 1, 3650);
        let attribution_wait_seconds = self.uint(&mut t, p, "attribution_wait_seconds", 5, 0, 60);
        self.finish(t, p);
        let nats_url = nats_url?;
        for u in nats_url.split(',') {
            let u = u.trim();
            if !(u.starts_with("nats://") || u.starts_with("tls://"))
                || url::Url::parse(u).map_or(true, |x| x.host_str().is_none())
            {
                self.bad(
                    "cluster.nats_url".into(),
                    format!("{u:?} is not a nats://host:port URL"),
                );
            }
        }
        Some(ClusterConfig {
            nats_url,
            role,
            node_id,
            replicas,
            credentials_file,
            user,
            password,
            tls_ca_file,
            advertise_url,
            lease_seconds,
            clicks_max_age_days,
            attribution_wait_seconds,
        })
    }

    fn signing_keys(&mut self, root: &mut Table) -> Vec<ConfiguredKey> {
        let items = match root.remove("signing_keys") {
            None => return Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => {
                self.bad("signing_keys".into(), "must be an array of tables");
                return Vec::new();
            }
        };
        let mut keys: Vec<ConfiguredKey> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let prefix = format!("signing_keys[{i}]");
            let Value::Table(mut t) = item else {
                self.bad(prefix, "must be a table with id and secret");
                continue;
            };
            let id = self.uint(&mut t, &prefix, "id", 0, 1, u64::from(u32::MAX)) as u32;
            let secret = match self.string(&mut t, &prefix, "secret") {
                None => {
                    self.bad(join(&prefix, "secret"), "is required");
                    Vec::new()
                }
                Some(s) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s.trim_end_matches('='))
                {
                    Ok(b) if b.len() >= 32 => b,
                    _ => {
                        self.bad(
                            join(&prefix, "secret"),
                            "must be base64url of at least 32 bytes",
                        );
                        Vec::new()
                    }
                },
            };
            let retired = self.boolean(&mut t, &prefix, "retired", false);
            if keys.iter().any(|k| k.id == id) {
                self.bad(join(&prefix, "id"), format!("key id {id} appears twice"));
            }
            self.finish(t, &prefix);
            keys.push(ConfiguredKey {
                id,
                secret,
                retired,
            });
        }
        if !keys.is_empty() && keys.iter().all(|k| k.retired) {
            self.bad(
                "signing_keys".into(),
                "at least one key must not be retired",
            );
        }
        keys
    }

    fn program(&mut self, key: String, mut t: Table, prefix: &str) -> Program {
        let name = self
            .string(&mut t, prefix, "name")
            .unwrap_or_else(|| key.clone());
        let currency = self
            .string(&mut t, prefix, "currency")
            .unwrap_or_else(|| "USD".into());
        if !is_currency(&currency) {
            self.bad(
                join(prefix, "currency"),
                format!("{currency:?} is not a 3-letter ISO 4217 code"),
            );
        }
        let cookie_days = self.uint(
            &mut t,
            prefix,
            "cookie_days",
            DEFAULT_COOKIE_DAYS.into(),
            1,
            3650,
        ) as u32;
        let attribution = match self.string(&mut t, prefix, "attribution") {
            None => Attribution::LastClick,
            Some(s) => Attribution::parse(&s).unwrap_or_else(|| {
                self.bad(
                    join(prefix, "attribution"),
                    "must be \"last_click\" or \"first_click\"",
                );
                Attribution::LastClick
            }),
        };
        let mut allowed_hosts = Vec::new();
        for (i, h) in self
            .list(&mut t, prefix, "allowed_hosts")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match HostPattern::parse(&h) {
                Some(p) => allowed_hosts.push(p),
                None => self.bad(
                    format!("{}[{i}]", join(prefix, "allowed_hosts")),
                    format!("{h:?} is not a host name or *.domain pattern"),
                ),
            }
        }
        if allowed_hosts.is_empty() {
            self.bad(
                join(prefix, "allowed_hosts"),
                "needs at least one host, or no link could ever redirect",
            );
        }
        let partner_links = self.boolean(&mut t, prefix, "partner_links", false);
        let review = self.review(&mut t, prefix);
        let webhook_secret = self.string(&mut t, prefix, "webhook_secret");
        if webhook_secret.as_ref().is_some_and(|s| s.len() < 16) {
            self.bad(
                join(prefix, "webhook_secret"),
                "must be at least 16 characters",
            );
        }
        let stripe = self.stripe(&mut t, prefix);
        let money = self.money(&mut t, prefix);
        let fraud = match t.remove("fraud") {
            None => Default::default(),
            Some(v) => match serde_path_to_error::deserialize::<_, crate::fraud::FraudRules>(v) {
                Ok(r) => r,
                Err(e) => {
                    let path = e.path().to_string();
                    self.bad(
                        join(prefix, &format!("fraud.{path}")),
                        e.into_inner().to_string(),
                    );
                    Default::default()
                }
            },
        };
        if review.holds(ReviewFlag::FastSignup)
            && fraud.enabled
            && review.fast_signup_seconds <= fraud.min_click_to_signup_seconds
        {
            self.bad(
                join(prefix, "review_fast_signup_seconds"),
                format!(
                    "must be more than fraud.min_click_to_signup_seconds ({}): faster signups are refused, so none could be held",
                    fraud.min_click_to_signup_seconds
                ),
            );
        }
        self.finish(t, prefix);
        Program {
            key,
            name,
            currency,
            cookie_days,
            attribution,
            allowed_hosts,
            money,
            webhook_secret,
            stripe,
            partner_links,
            review,
            fraud,
        }
    }

    /// `[programs.<key>.stripe]`: `webhook_secret`, the signing secret of
    /// the program's Stripe webhook endpoint (`whsec_…`).
    fn stripe(&mut self, t: &mut Table, prefix: &str) -> Option<crate::program::Stripe> {
        let at = join(prefix, "stripe");
        match t.remove("stripe")? {
            Value::Table(mut st) => {
                let secret = self.string(&mut st, &at, "webhook_secret");
                self.finish(st, &at);
                match secret {
                    Some(s) if s.len() >= 16 => Some(crate::program::Stripe { webhook_secret: s }),
                    Some(_) => {
                        self.bad(
                            join(&at, "webhook_secret"),
                            "must be at least 16 characters",
                        );
                        None
                    }
                    None => {
                        self.bad(
                            join(&at, "webhook_secret"),
                            "is required (the endpoint's signing secret, whsec_…)",
                        );
                        None
                    }
                }
            }
            _ => {
                self.bad(at, "must be a table with webhook_secret");
                None
            }
        }
    }

    /// `review_flags` and `review_fast_signup_seconds`.
    fn review(&mut self, t: &mut Table, prefix: &str) -> ReviewPolicy {
        let mut flags = Vec::new();
        for (i, f) in self
            .list(t, prefix, "review_flags")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match ReviewFlag::parse(f.trim()) {
                Some(flag) if !flags.contains(&flag) => flags.push(flag),
                Some(_) => {}
                None => self.bad(
                    format!("{}[{i}]", join(prefix, "review_flags")),
                    format!("{f:?} is not one of paid_search, fast_signup, shared_ip"),
                ),
            }
        }
        let fast_signup_seconds = self.uint(t, prefix, "review_fast_signup_seconds", 60, 1, 86_400);
        ReviewPolicy {
            flags,
            fast_signup_seconds,
        }
    }

    /// The money tables of a program, through serde so that every field of
    /// the rule vocabulary is checked and named.
    fn money(&mut self, t: &mut Table, prefix: &str) -> Option<Rules> {
        let mut money = Table::new();
        for key in [
            "commission",
            "payout",
            "inactivity",
            "benefit_tiers",
            "termination",
        ] {
            if let Some(v) = t.remove(key) {
                money.insert(key.into(), v);
            }
        }
        if money.is_empty() {
            return None;
        }
        if !money.contains_key("commission") {
            self.bad(
                join(prefix, "commission"),
                "is required when payout rules are given",
            );
            return None;
        }
        match serde_path_to_error::deserialize::<_, Rules>(Value::Table(money)) {
            Ok(rules) => {
                for (field, reason) in rules.problems() {
                    self.bad(join(prefix, &field), reason);
                }
                Some(rules)
            }
            Err(e) => {
                let path = e.path().to_string();
                self.bad(join(prefix, &path), e.into_inner().to_string());
                None
            }
        }
    }
}

/// A node id: what a NATS subject token and a KV key both accept.
pub fn is_node_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Three upper-case ASCII letters.
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[("PATH", "/bin")])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./refedge-data"));
        let keys: Vec<_> = c.programs.keys().cloned().collect();
        assert_eq!(keys, ["aircall", "aloware", "krispcall", "ringostat"]);
        assert_eq!(c.programs["krispcall"].cookie_days, 90);
        assert_eq!(c.programs["aircall"].attribution, Attribution::FirstClick);
    }

    #[test]
    fn file_then_env_override_defaults_and_presets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refedge.toml");
        std::fs::write(
            &path,
            r#"
listen = "0.0.0.0:9000"
trusted_proxies = ["10.0.0.0/8"]
[clicks]
batch_max = 100
[programs.krispcall]
cookie_days = 60
[programs.acme]
allowed_hosts = ["acme.test"]
"#,
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("REFEDGE_CLICKS__BATCH_MAX", "7"),
                ("REFEDGE_PROGRAMS__KRISPCALL__ATTRIBUTION", "first_click"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.clicks.batch_max, 7);
        assert_eq!(c.programs["krispcall"].cookie_days, 60);
        assert_eq!(c.programs["krispcall"].attribution, Attribution::FirstClick);
        assert_eq!(c.programs["acme"].cookie_days, DEFAULT_COOKIE_DAYS);
        assert!(c.trusted_proxies[0].contains("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn every_bad_setting_is_reported_at_once() {
        let e = Config::load(
            None,
            env(&[
                ("REFEDGE_LISTEN", "nowhere"),
                ("REFEDGE_CLICKS__BATCH_MAX", "-3"),
                ("REFEDGE_TRUSTED_PROXIES", "10.0.0.0/8, bogus"),
                ("REFEDGE_PROGRAMS__ALOWARE__ATTRIBUTION", "random"),
                ("REFEDGE_COLOUR", "blue"),
            ]),
        )
        .unwrap_err();
        let names: Vec<&str> = e.0.iter().map(|e| e.setting.as_str()).collect();
        assert_eq!(
            names,
            [
                "listen",
                "trusted_proxies[1]",
                "clicks.batch_max",
                "programs.aloware.attribution",
                "colour"
            ]
        );
        assert!(e.to_string().contains("5 invalid setting(s)"));
    }

    #[test]
    fn review_settings_are_read_and_checked() {
        let c = Config::load(
            None,
            env(&[
                (
                    "REFEDGE_PROGRAMS__KRISPCALL__REVIEW_FLAGS",
                    "paid_search, shared_ip",
                ),
                ("REFEDGE_PROGRAMS__ALOWARE__REVIEW_FLAGS", "fast_signup"),
                (
                    "REFEDGE_PROGRAMS__ALOWARE__REVIEW_FAST_SIGNUP_SECONDS",
                    "120",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.programs["krispcall"].review.flags,
            [ReviewFlag::PaidSearch, ReviewFlag::SharedIp]
        );
        assert_eq!(c.programs["aloware"].review.fast_signup_seconds, 120);
        assert!(c.programs["aircall"].review.flags.is_empty());
        let e = Config::load(
            None,
            env(&[
                (
                    "REFEDGE_PROGRAMS__KRISPCALL__REVIEW_FLAGS",
                    "paid_search, bot",
                ),
                ("REFEDGE_PROGRAMS__ALOWARE__REVIEW_FLAGS", "fast_signup"),
                ("REFEDGE_PROGRAMS__ALOWARE__REVIEW_FAST_SIGNUP_SECONDS", "5"),
            ]),
        )
        .unwrap_err();
        let names: Vec<&str> = e.0.iter().map(|e| e.setting.as_str()).collect();
        assert_eq!(
            names,
            [
                "programs.aloware.review_fast_signup_seconds",
                "programs.krispcall.review_flags[1]"
            ]
        );
        assert!(e.to_string().contains("min_click_to_signup_seconds (5)"));
    }

    #[test]
    fn cluster_settings_are_read_and_every_bad_one_reported() {
        let c = Config::load(
            None,
            env(&[
                (
                    "REFEDGE_CLUSTER__NATS_URL",
                    "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
                ),
                ("REFEDGE_CLUSTER__ROLE", "edge"),
                ("REFEDGE_CLUSTER__REPLICAS", "3"),
            ]),
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.role, Role::Edge);
        assert_eq!(cluster.replicas, 3);
        assert_eq!(cluster.lease_seconds, 5);
        assert!(Config::load(None, env(&[])).unwrap().cluster.is_none());

        let e = Config::load(
            None,
            env(&[
                ("REFEDGE_CLUSTER__NATS_URL", "http://10.0.0.1:4222"),
                ("REFEDGE_CLUSTER__ROLE", "leader"),
                ("REFEDGE_CLUSTER__NODE_ID", "edge 1"),
                ("REFEDGE_CLUSTER__USER", "refedge"),
                ("REFEDGE_CLUSTER__LEASE_SECONDS", "1"),
                ("REFEDGE_CLUSTER__ADVERTISE_URL", "ftp://x"),
            ]),
        )
        .unwrap_err();
        let mut names: Vec<&str> = e.0.iter().map(|e| e.setting.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cluster.advertise_url",
                "cluster.lease_seconds",
                "cluster.nats_url",
                "cluster.node_id",
                "cluster.role",
                "cluster.user",
            ]
        );
    }
}
