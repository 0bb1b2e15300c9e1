//! The console's payout pages (finance): choose a program and date,
//! preview the batch (a dry run), run it, download its CSV for the
//! payments platform, confirm it paid; past batches.

use super::{download, page, render, see_other, Chrome, Ctx};
use crate::edge::http::{ApiError, Body};
use askama::Template;
use chrono::{DateTime, Utc};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct BatchSummary {
    id: String,
    program: String,
    as_of: DateTime<Utc>,
    status: String,
    partners: usize,
    totals: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Batches {
    payouts: Vec<BatchSummary>,
}

#[derive(Deserialize)]
struct Item {
    partner_id: String,
    amount: String,
    currency: String,
    method: String,
}

#[derive(Deserialize)]
struct Batch {
    id: String,
    program: String,
    as_of: DateTime<Utc>,
    status: String,
    items: Vec<Item>,
    #[serde(default)]
    deactivated: Vec<String>,
}

#[derive(Template)]
#[template(path = "payouts.html")]
struct List {
    chrome: Chrome,
    batches: Vec<BatchSummary>,
    programs: Vec<String>,
    today: String,
}

#[derive(Template)]
#[template(path = "payout.html")]
struct One {
    chrome: Chrome,
    b: Batch,
    /// A preview: nothing was recorded; the form to run it.
    preview: bool,
    date: String,
}

/// `/console/payouts...`
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::GET, []) => {
            let list: Batches = ctx.api(Method::GET, "payouts", None).await?;
            render(&List {
                chrome: Chrome::of(ctx),
                batches: list.payouts,
                programs: ctx.app.config.programs.keys().cloned().collect(),
                today: ctx.app.clock.now().format("%Y-%m-%d").to_string(),
            })
        }
        (&Method::POST, []) => run(ctx).await,
        (&Method::GET, [id]) => {
            let b: Batch = ctx.api(Method::GET, &format!("payouts/{id}"), None).await?;
            let date = b.as_of.format("%Y-%m-%d").to_string();
            render(&One {
                chrome: Chrome::of(ctx),
                b,
                preview: false,
                date,
            })
        }
        (&Method::GET, [id, "csv"]) => {
            let csv = ctx
                .api_raw(Method::GET, &format!("payouts/{id}/csv"), None)
                .await?;
            Ok(download(
                "text/csv; charset=utf-8",
                &format!("{id}.csv"),
                csv.to_vec(),
            ))
        }
        (&Method::POST, [id, "confirm"]) => {
            let b: Batch = ctx
                .api(Method::POST, &format!("payouts/{id}/confirm"), None)
                .await?;
            Ok(see_other(&format!(
                "/console/payouts/{}?done=confirmed",
                b.id
            )))
        }
        _ => Err(ApiError::NotFound("page")),
    }
}

/// Preview (dry run) or run the batch of a program on a date (the
/// payout is as of the end of that day, UTC).
async fn run(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let date = ctx.field("date").to_string();
    let day = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("date", "must be a date (YYYY-MM-DD)"))?;
    let as_of = day.and_hms_opt(23, 59, 59).expect("valid time").and_utc();
    let preview = ctx.field("action") != "run";
    let body = json!({"program": ctx.field("program"), "as_of": as_of, "dry_run": preview});
    let b: Batch = ctx.api(Method::POST, "payouts/run", Some(body)).await?;
    if !preview {
        return Ok(see_other(&format!("/console/payouts/{}?done=run", b.id)));
    }
    let html = One {
        chrome: Chrome::of(ctx),
        b,
        preview: true,
        date,
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(page(StatusCode::OK, html))
}
