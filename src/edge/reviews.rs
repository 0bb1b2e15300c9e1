//! HTTP for the review queue: referrals held for review (`GET
//! /api/v1/reviews`, `GET /api/v1/reviews/{id}`) and an analyst's decision
//! (`POST /api/v1/reviews/{id}`), which goes through the event log like
//! every other change of money, so a replay decides the same.

use super::http::{json, only_params, query_pairs, read_body, ApiError, ApiRequest, Body};
use super::money::{append_internal, param, wait};
use super::App;
use crate::commission::calculator::Calculator;
use crate::commission::review::{Decision, Review, ReviewDecision, ReviewStatus};
use crate::commission::Event;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json as j, Value};
use std::sync::Arc;

/// Most reviews one page lists.
const MAX_LIMIT: usize = 500;

/// Longest reason (it goes into ledger explanations).
const MAX_REASON_CHARS: usize = 500;

/// A review with what it holds now, per currency.
fn view(c: &Calculator, r: &Review) -> Value {
    let mut v = serde_json::to_value(r).expect("reviews serialise");
    let held: serde_json::Map<String, Value> = c
        .held_amounts(r)
        .into_iter()
        .map(|(cur, amount)| (cur, Value::String(format!("{amount:.2}"))))
        .collect();
    v["held"] = Value::Object(held);
    v
}

/// `GET /api/v1/reviews?status=held|approved|rejected|all&program=&partner=&limit=&offset=`:
/// newest first; `status` defaults to `held` (the queue).
pub async fn list(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(
        &pairs,
        &[
            "status", "program", "partner", "limit", "offset", "wait_for",
        ],
    )?;
    wait(&app, &pairs).await?;
    let status = match param(&pairs, "status").unwrap_or("held") {
        "held" => Some(ReviewStatus::Held),
        "approved" => Some(ReviewStatus::Approved),
        "rejected" => Some(ReviewStatus::Rejected),
        "all" => None,
        other => {
            return Err(ApiError::invalid(
                "status",
                format!("{other:?} is not one of held, approved, rejected, all"),
            ))
        }
    };
    if let Some(p) = param(&pairs, "program") {
        super::money::known_program(&app, p)?;
    }
    let number = |key: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match param(&pairs, key) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| ApiError::invalid(key, format!("must be a number from 0 to {max}"))),
        }
    };
    let limit = number("limit", 100, MAX_LIMIT)?;
    let offset = number("offset", 0, usize::MAX)?;
    let program = param(&pairs, "program");
    let partner = param(&pairs, "partner");
    let out = app.conversions.read(|c| {
        let all = c.reviews(status, program, partner);
        let page: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|r| view(c, r))
            .collect();
        j!({"reviews": page, "total": all.len(), "limit": limit, "offset": offset})
    });
    Ok(json(StatusCode::OK, &out))
}

/// `GET /api/v1/reviews/{id}`
pub fn get(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let out = app
        .conversions
        .read(|c| c.review(id).map(|r| view(c, r)))
        .ok_or(ApiError::NotFound("review"))?;
    Ok(json(StatusCode::OK, &out))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionIn {
    decision: Decision,
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

/// `POST /api/v1/reviews/{id}` `{"decision": "approve"|"reject", "reason",
/// "actor"?}`: approval moves the held commissions to the program's
/// schedule, rejection voids them with the reason in the ledger. A review
/// is decided once: repeating the same decision answers it again (200),
/// another decision is a 409.
pub async fn decide(
    app: Arc<App>,
    req: ApiRequest,
    id: String,
    who: String,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(req, app.config.max_body_bytes).await?;
    let input: DecisionIn = super::http::parse_json(&body)?;
    let reason = input.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::invalid(
            "reason",
            "say why: it goes into the ledger's explanation",
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid(
            "reason",
            format!("is longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    let actor = match input.actor {
        None => who,
        Some(a) if a.trim().is_empty() || a.chars().count() > 200 => {
            return Err(ApiError::invalid("actor", "must be 1 to 200 characters"))
        }
        Some(a) => a.trim().to_string(),
    };
    let found = app.conversions.read(|c| {
        c.review(&id)
            .map(|r| (r.program.clone(), r.customer_id.clone(), r.status))
    });
    let Some((program, customer_id, status)) = found else {
        return Err(ApiError::NotFound("review"));
    };
    let wanted = match input.decision {
        Decision::Approve => ReviewStatus::Approved,
        Decision::Reject => ReviewStatus::Rejected,
    };
    if status != ReviewStatus::Held && status != wanted {
        return Err(ApiError::Conflict(format!(
            "review {id} was already {}",
            status.label()
        )));
    }
    let decision = ReviewDecision {
        review_id: id.clone(),
        program,
        customer_id,
        decision: input.decision,
        occurred_at: app.clock.now(),
        actor,
        reason,
    };
    // The digest leaves the time out: the same decision sent again is a
    // repeat, whenever it is sent.
    let digest_of = j!({
        "review_id": id,
        "decision": decision.decision,
        "reason": decision.reason,
        "actor": decision.actor,
    });
    append_internal(&app, Event::ReviewDecision(decision), &digest_of).await?;
    get(&app, &id)
}
