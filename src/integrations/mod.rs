//! Billing systems' payloads as refedge events, as pure functions: no HTTP
//! types, no store. `edge::stripe` receives the deliveries and hands what
//! these make to the events pipeline.
//!
//! - [`currency`]: integer minor units to decimal amounts, per currency.
//! - [`stripe`]: Stripe's webhook events (API versions 2024-06-20 and
//!   2025-03-31 "basil" onwards) to signups, payments, refunds,
//!   chargebacks, cancellations and plan changes.

pub mod currency;
pub mod stripe;
