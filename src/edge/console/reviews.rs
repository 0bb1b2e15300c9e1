//! The console's review queue (fraud; finance may look): referrals held
//! for review with the signals that held them and what they hold, and the
//! approve / reject form with the analyst's reason.

use super::{render, see_other, Chrome, Ctx};
use crate::edge::http::{ApiError, Body};
use askama::Template;
use chrono::{DateTime, Utc};
use hyper::{Method, Response};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Statuses the page filters on, in the order of its tabs.
const STATUSES: [&str; 4] = ["held", "approved", "rejected", "all"];

#[derive(Deserialize)]
struct SignalView {
    flag: String,
    detail: String,
}

#[derive(Deserialize)]
struct ReviewView {
    id: String,
    program: String,
    customer_id: String,
    partner_id: String,
    held_at: DateTime<Utc>,
    signals: Vec<SignalView>,
    status: String,
    #[serde(default)]
    decided_at: Option<DateTime<Utc>>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    held: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Queue {
    reviews: Vec<ReviewView>,
    total: usize,
}

#[derive(Template)]
#[template(path = "reviews.html")]
struct Page {
    chrome: Chrome,
    status: String,
    statuses: [&'static str; 4],
    q: Queue,
}

/// `/console/reviews...`
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::GET, []) => {
            let status = ctx
                .q("status")
                .filter(|s| STATUSES.contains(s))
                .unwrap_or("held")
                .to_string();
            let q: Queue = ctx
                .api(Method::GET, &format!("reviews?status={status}"), None)
                .await?;
            render(&Page {
                chrome: Chrome::of(ctx),
                status,
                statuses: STATUSES,
                q,
            })
        }
        (&Method::POST, [id]) => {
            let decision = match ctx.field("decision") {
                d @ ("approve" | "reject") => d.to_string(),
                _ => return Err(ApiError::invalid("decision", "approve or reject")),
            };
            let body = json!({
                "decision": decision,
                "reason": ctx.field("reason"),
                "actor": ctx.s().who,
            });
            let _: serde_json::Value = ctx
                .api(Method::POST, &format!("reviews/{id}"), Some(body))
                .await?;
            let done = if decision == "approve" {
                "approved"
            } else {
                "rejected"
            };
            Ok(see_other(&format!("/console/reviews?done={done}")))
        }
        _ => Err(ApiError::NotFound("page")),
    }
}
