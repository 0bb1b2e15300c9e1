//! refedge: a referral-tracking edge server.
//!
//! Module map:
//! - [`config`]: the one place settings are read and validated.
//! - [`edge`]: the only module that knows HTTP: server, routing, redirect, admin API.
//! - [`fraud`]: click verdicts (bots, stuffing, rate limits, duplicates, paid search), no HTTP types.
//! - [`clock`]: the only reader of the system clock.
//! - [`code`]: link codes as compact map keys.
//! - [`device`]: the device class of a click from its user agent.
//! - [`commission`]: rules as data, events, the calculator and its append-only ledger; no I/O.
//! - [`conversions`]: event ingestion (idempotent, durable) and the calculator task.
//! - [`integrations`]: Stripe's webhook payloads as refedge events (pure functions).
//! - [`id`]: time-ordered click ids, random partner ids and link codes.
//! - [`json`]: JSON input decoding that names the field at fault.
//! - [`net`]: CIDR networks and the visitor prefix kept instead of an IP.
//! - [`program`]: partner programs as data, and the four seed presets.
//! - [`replay`]: run a JSON-lines event file through a fresh calculator.
//! - [`model`]: the records kept: partners, links, clicks.
//! - [`store`]: sled, key layout, group-committed click batches; nothing else imports sled.
//! - [`clicklog`]: the bounded click queue and the group-committing writer task.
//! - [`background`]: threads for background work that never preempt the request path.
//! - [`directory`]: partners and links, validated, with the in-memory index the redirect reads.
//! - [`metrics`]: the Prometheus registry and typed metric families.
//! - [`token`]: the signed attribution token and its keyring.
//! - [`secrets`]: admin token, keyring and IP-hash key files (mode 0600).
//! - [`webhooks`]: the durable outbox of webhooks and partner postbacks, and its delivery task.
//! - [`signature`]: the `t=…,v1=…` HMAC scheme of signed deliveries, in and out.

pub mod access;
pub mod background;
pub mod clicklog;
pub mod clock;
pub mod cluster;
pub mod code;
pub mod commission;
pub mod config;
pub mod conversions;
pub mod device;
pub mod directory;
pub mod edge;
pub mod fraud;
pub mod id;
pub mod integrations;
pub mod json;
pub mod metrics;
pub mod model;
pub mod net;
pub mod program;
pub mod replay;
pub mod secrets;
pub mod signature;
pub mod store;
pub mod token;
pub mod webhooks;
