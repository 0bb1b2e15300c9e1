//! The console's overview and partner pages: search and list, create, and
//! each partner's page (details, standing and its audit log, links,
//! referrals and rejections, ledger lines, balances, payouts), with the
//! standing change and the portal sign-in link.

use super::views::{Audit, Balances, LinkPage, PartnerPage, PartnerPayouts, Referrals, Statement};
use super::{render, see_other, Chrome, Ctx};
use crate::edge::http::{ApiError, Body};
use crate::model::Partner;
use askama::Template;
use hyper::{Method, Response};
use serde_json::json;

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    partners: usize,
    links: usize,
    programs: Vec<(String, String)>,
}

/// `GET /console/`
pub(super) async fn overview(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let programs = ctx
        .app
        .config
        .programs
        .iter()
        .map(|(k, p)| (k.clone(), p.name.clone()))
        .collect();
    render(&Overview {
        chrome: Chrome::of(ctx),
        partners: ctx.app.directory.partner_count(),
        links: ctx.app.directory.link_count(),
        programs,
    })
}

#[derive(Template)]
#[template(path = "partners.html")]
struct List {
    chrome: Chrome,
    q: String,
    page: PartnerPage,
    programs: Vec<String>,
    /// Query string of the next page.
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "partner.html")]
struct Detail {
    chrome: Chrome,
    p: Partner,
    links: Option<LinkPage>,
    audit: Option<Audit>,
    balances: Option<Balances>,
    month: String,
    statement: Option<Statement>,
    referrals: Option<Referrals>,
    payouts: Option<PartnerPayouts>,
    portal_url: Option<String>,
    fraud: Option<FraudProfile>,
    /// Clicks per day over the last 30 days (fraud profile), as SVG.
    chart: Option<String>,
}

#[derive(serde::Deserialize)]
struct FraudDay {
    date: chrono::NaiveDate,
    clicks: u64,
    flagged: u64,
}

#[derive(serde::Deserialize)]
struct FraudProfile {
    clicks: u64,
    flagged: u64,
    flagged_share: String,
    distinct_visitors: u64,
    days: Vec<FraudDay>,
}

/// `/console/partners...`
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::GET, []) => list(ctx).await,
        (&Method::POST, []) => create(ctx).await,
        (&Method::GET, [id]) => detail(ctx, id, None).await,
        (&Method::POST, [id, "status"]) => status(ctx, id).await,
        (&Method::POST, [id, "portal-link"]) => {
            let out: serde_json::Value = ctx
                .api(Method::POST, &format!("partners/{id}/portal-link"), None)
                .await?;
            let url = out["url"].as_str().unwrap_or_default().to_string();
            detail(ctx, id, Some(url)).await
        }
        _ => Err(ApiError::NotFound("page")),
    }
}

async fn list(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let q = ctx.q("q").unwrap_or_default().to_string();
    let mut query: Vec<(&str, &str)> = vec![("limit", "50")];
    if !q.trim().is_empty() {
        query.push(("q", q.as_str()));
    }
    if let Some(a) = ctx.q("after") {
        query.push(("after", a));
    }
    let qs = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&query)
        .finish();
    let page: PartnerPage = ctx
        .api(Method::GET, &format!("partners?{qs}"), None)
        .await?;
    let next = page.next.as_ref().map(|n| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &q)
            .append_pair("after", n)
            .finish()
    });
    render(&List {
        chrome: Chrome::of(ctx),
        q,
        page,
        programs: ctx.app.config.programs.keys().cloned().collect(),
        next,
    })
}

async fn create(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let mut body = json!({
        "program": ctx.field("program"),
        "name": ctx.field("name"),
        "email": ctx.field("email"),
        "website": ctx.field("website"),
    });
    if !ctx.field("currency").is_empty() {
        body["currency"] = json!(ctx.field("currency"));
    }
    let p: Partner = ctx.api(Method::POST, "partners", Some(body)).await?;
    Ok(see_other(&format!(
        "/console/partners/{}?done=partner",
        p.id
    )))
}

async fn status(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    let body = json!({
        "status": ctx.field("status"),
        "reason": ctx.field("reason"),
        "actor": ctx.s().who,
    });
    let _: serde_json::Value = ctx
        .api(Method::PATCH, &format!("partners/{id}"), Some(body))
        .await?;
    Ok(see_other(&format!("/console/partners/{id}?done=status")))
}

async fn detail(
    ctx: &Ctx,
    id: &str,
    portal_url: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let p: Partner = ctx
        .api(Method::GET, &format!("partners/{id}"), None)
        .await?;
    let month = ctx.q("month").filter(|m| m.len() == 7).map_or_else(
        || ctx.app.clock.now().format("%Y-%m").to_string(),
        str::to_string,
    );
    let month_q: String = url::form_urlencoded::byte_serialize(month.as_bytes()).collect();
    let referrals = ctx.api_opt(&format!("referrals?partner={}", p.id)).await?;
    let fraud: Option<FraudProfile> = ctx.api_opt(&format!("fraud/partners/{id}")).await?;
    let chart = fraud.as_ref().map(|f| {
        let to = ctx.app.clock.now().date_naive();
        let by_day: std::collections::HashMap<_, _> = f
            .days
            .iter()
            .map(|d| (d.date, (d.clicks - d.flagged, d.flagged)))
            .collect();
        let days = super::chart::fill(to - chrono::Duration::days(29), to, |d| {
            by_day.get(&d).copied().unwrap_or((0, 0))
        });
        super::chart::daily(&days, "Clicks per day, last 30 days")
    });
    render(&Detail {
        chrome: Chrome::of(ctx),
        links: ctx.api_opt(&format!("partners/{id}/links")).await?,
        audit: ctx.api_opt(&format!("partners/{id}/audit")).await?,
        balances: ctx.api_opt(&format!("partners/{id}/balance")).await?,
        statement: ctx
            .api_opt(&format!("partners/{id}/statement?month={month_q}"))
            .await?,
        payouts: ctx.api_opt(&format!("partners/{id}/payouts")).await?,
        referrals,
        month,
        portal_url,
        fraud,
        chart,
        p,
    })
}
