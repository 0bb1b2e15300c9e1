//! Money: programs' commission rules as data, the events they apply to, the
//! calculator that turns events into an append-only ledger, and balances,
//! statements and payouts derived from it. No I/O, no HTTP, no clock.

pub mod calculator;
pub mod event;
pub mod ledger;
pub mod money;
pub mod quarantine;
pub mod review;
pub mod rules;

pub use calculator::{Calculator, ProgramBook};
pub use event::Event;
