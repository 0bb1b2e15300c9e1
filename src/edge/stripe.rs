//! `POST /integrations/stripe/{program}`: Stripe's webhook deliveries for a
//! program, verified (`Stripe-Signature`, the program's
//! `stripe.webhook_secret`), read by `integrations::stripe` and appended
//! through the events pipeline, idempotent on Stripe's event id.
//!
//! Answers: 200 once the delivery's events are durably in the log (or were
//! already: a repeat), or when the delivery is of no use to refedge (said
//! in `ignored`); 400 for a signature or API version refedge cannot accept
//! (nothing changes); 422 naming the field a delivery lacks; 409 when it
//! names a payment of a referred customer whose invoice refedge has not
//! seen yet (Stripe retries with back-off). Counted in
//! `refedge_stripe_deliveries_total{program, outcome}`.

use super::http::{json, read_body, ApiError, ApiRequest, Body};
use super::money::{caught_up, ingest};
use super::App;
use crate::commission::Calculator;
use crate::integrations::stripe::{self, Known, Outcome, Refusal, RefusalKind};
use hyper::{Response, StatusCode};
use serde_json::{json as j, Value};
use std::sync::Arc;

/// The header Stripe signs deliveries in.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// Event types a Stripe delivery may make.
const TYPES: &[&str] = &[
    "signup",
    "payment",
    "refund",
    "chargeback",
    "cancellation",
    "plan_change",
    "billing_refs",
];

/// What the calculator knows, for one program.
struct Ledger<'a> {
    calc: &'a Calculator,
    program: &'a str,
}

impl Known for Ledger<'_> {
    fn paid_by(&self, payment: &str) -> Option<(String, String)> {
        self.calc
            .paid_by(self.program, payment)
            .map(|(c, i)| (c.to_string(), i.to_string()))
    }

    fn referred(&self, customer: &str) -> bool {
        self.calc.customer(self.program, customer).0.is_some()
    }
}

fn refusal(r: Refusal) -> ApiError {
    match r.kind {
        RefusalKind::Unreadable => ApiError::BadRequest {
            field: r.field,
            reason: r.reason,
        },
        RefusalKind::Invalid => ApiError::invalid(r.field, r.reason),
        RefusalKind::NotYet => ApiError::Conflict(format!("{}: {}", r.field, r.reason)),
    }
}

/// Receives one delivery for `program`.
pub async fn receive(
    app: Arc<App>,
    req: ApiRequest,
    program: &str,
) -> Result<Response<Body>, ApiError> {
    let Some(settings) = app
        .config
        .programs
        .get(program)
        .and_then(|p| p.stripe.as_ref())
    else {
        return Err(ApiError::NotFound("Stripe endpoint for this program"));
    };
    let secret = settings.webhook_secret.clone();
    let count = |outcome: &str| {
        app.metrics
            .stripe_deliveries
            .with_label_values(&[program, outcome])
            .inc();
    };
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_body(req, app.config.max_body_bytes).await?;
    let checked = match &signature {
        None => Err("is required".to_string()),
        Some(s) => crate::signature::verify(&secret, s, &body, app.clock.now_s())
            .map_err(|e| e.to_string()),
    };
    if let Err(reason) = checked {
        count("bad_signature");
        return Err(ApiError::BadRequest {
            field: "Stripe-Signature".into(),
            reason,
        });
    }
    let delivery = stripe::parse(&body).map_err(|r| {
        count(if r.field == "api_version" {
            "unknown_version"
        } else {
            "invalid"
        });
        refusal(r)
    })?;
    // Every earlier delivery must be applied before this one is read (a
    // refund finds the invoice its charge paid).
    caught_up(&app).await?;
    let outcome = app
        .conversions
        .read(|calc| stripe::translate(program, &delivery, &Ledger { calc, program }));
    let events = match outcome {
        Err(r) => {
            count(match r.kind {
                RefusalKind::NotYet => "not_yet",
                _ => "invalid",
            });
            return Err(refusal(r));
        }
        Ok(Outcome::Ignored(why)) => {
            count("ignored");
            return Ok(json(
                StatusCode::OK,
                &j!({"received": true, "ignored": why}),
            ));
        }
        Ok(Outcome::Events(events)) => events,
    };
    let results = ingest(&app, events, TYPES, Some(program)).await?;
    if let Some(bad) = results.iter().find(|r| r["status"] == "rejected") {
        count("invalid");
        return Err(ApiError::invalid(
            bad["field"].as_str().unwrap_or_default(),
            format!(
                "the event made from this delivery was refused: {}",
                bad["error"].as_str().unwrap_or_default()
            ),
        ));
    }
    if results.iter().any(|r| r["status"] == "conflict") {
        count("invalid");
        return Err(ApiError::Conflict(format!(
            "Stripe event {} was already received with other content",
            delivery.id
        )));
    }
    let repeat = results.iter().all(|r| r["status"] == "duplicate");
    count(if repeat { "duplicate" } else { "applied" });
    let events: Vec<Value> = results
        .into_iter()
        .map(|r| j!({"id": r["id"], "status": r["status"], "seq": r["seq"]}))
        .collect();
    Ok(json(
        StatusCode::OK,
        &j!({"received": true, "stripe_event": delivery.id, "events": events}),
    ))
}
