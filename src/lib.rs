//! refedge: a referral-tracking edge server.
//!
//! Module map:
//! - [`config`]: the one place settings are read and validated.
//! - [`clock`]: the only reader of the system clock.
//! - [`id`]: time-ordered click ids, random partner ids and link codes.
//! - [`net`]: CIDR networks and the visitor prefix kept instead of an IP.
//! - [`program`]: partner programs as data, and the four seed presets.
//! - [`token`]: the signed attribution token and its keyring.
//! - [`secrets`]: admin token, keyring and IP-hash key files (mode 0600).

pub mod clock;
pub mod config;
pub mod id;
pub mod net;
pub mod program;
pub mod secrets;
pub mod token;
