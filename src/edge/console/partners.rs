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
    /// The period, in days (7, 30 or 90).
    period: i64,
    chart: String,
    /// Per program: key, name, counted and not counted clicks.
    programs: Vec<(String, String, u64, u64)>,
    counted: u64,
    not_counted: u64,
    /// Referrals and refused signups in the period (roles that read them).
    signups: Option<(usize, usize)>,
    /// Payout batches dated in the period, totals by currency (finance).
    paid: Option<Vec<(String, String)>>,
    /// Commission earned and reversed in the period by currency (finance).
    earned: Option<Vec<(String, Earned)>>,
    /// The period's busiest partners and links by counted clicks.
    top_partners: Vec<TopRow>,
    top_links: Vec<TopRow>,
}

/// One row of `GET /api/v1/stats/top`.
#[derive(serde::Deserialize)]
struct TopRow {
    #[serde(default)]
    partner_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    code: Option<String>,
    counted: u64,
    not_counted: u64,
}

#[derive(serde::Deserialize)]
struct Earned {
    earned: String,
    reversed: String,
}

#[derive(serde::Deserialize)]
struct Commissions {
    currencies: std::collections::BTreeMap<String, Earned>,
}

#[derive(serde::Deserialize)]
struct Top {
    top: Vec<TopRow>,
}

#[derive(serde::Deserialize)]
struct StatDay {
    date: chrono::NaiveDate,
    valid: u64,
    flagged: u64,
    blocked: u64,
}

#[derive(serde::Deserialize)]
struct Stats {
    days: Vec<StatDay>,
}

#[derive(serde::Deserialize)]
struct Counts {
    referrals: usize,
    rejections: usize,
}

#[derive(serde::Deserialize)]
struct SignupCounts {
    counts: Counts,
}

#[derive(serde::Deserialize)]
struct BatchTotals {
    as_of: chrono::DateTime<chrono::Utc>,
    totals: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Batches {
    payouts: Vec<BatchTotals>,
}

/// `GET /console/?days=7|30|90`: clicks per day (counted and not) over
/// every program, per program, and the period's signups and payouts.
pub(super) async fn overview(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let period = match ctx.q("days") {
        Some("7") => 7,
        Some("90") => 90,
        _ => 30,
    };
    let to = ctx.app.clock.now().date_naive();
    let from = to - chrono::Duration::days(period - 1);
    let mut per_day: std::collections::HashMap<chrono::NaiveDate, (u64, u64)> =
        std::collections::HashMap::new();
    let mut programs = Vec::new();
    for (key, p) in &ctx.app.config.programs {
        let stats: Option<Stats> = ctx
            .api_opt(&format!("stats/daily?program={key}&from={from}&to={to}"))
            .await?;
        let (mut c, mut n) = (0, 0);
        for d in stats.map(|s| s.days).unwrap_or_default() {
            let e = per_day.entry(d.date).or_default();
            e.0 += d.valid;
            e.1 += d.flagged + d.blocked;
            c += d.valid;
            n += d.flagged + d.blocked;
        }
        programs.push((key.clone(), p.name.clone(), c, n));
    }
    let days = super::chart::fill(from, to, |d| per_day.get(&d).copied().unwrap_or((0, 0)));
    let chart = super::chart::daily(&days, &format!("Clicks per day, last {period} days"));
    let start = from.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let since: String =
        url::form_urlencoded::byte_serialize(start.to_rfc3339().as_bytes()).collect();
    let signups = ctx
        .api_opt::<SignupCounts>(&format!("referrals?since={since}&limit=0"))
        .await?
        .map(|l| (l.counts.referrals, l.counts.rejections));
    let paid = ctx.api_opt::<Batches>("payouts").await?.map(|b| {
        let mut sums: std::collections::BTreeMap<String, rust_decimal::Decimal> =
            Default::default();
        for batch in b.payouts.iter().filter(|x| x.as_of >= start) {
            for (cur, t) in &batch.totals {
                *sums.entry(cur.clone()).or_default() +=
                    t.parse::<rust_decimal::Decimal>().unwrap_or_default();
            }
        }
        sums.into_iter()
            .map(|(c, v)| (c, format!("{v:.2}")))
            .collect()
    });
    let top = |by: &'static str| {
        let path = format!("stats/top?by={by}&from={from}&to={to}&limit=10");
        async move { ctx.api_opt::<Top>(&path).await }
    };
    let top_partners = top("partner").await?.map(|t| t.top).unwrap_or_default();
    let top_links = top("link").await?.map(|t| t.top).unwrap_or_default();
    let earned = ctx
        .api_opt::<Commissions>(&format!("stats/commissions?from={from}&to={to}"))
        .await?
        .map(|c| c.currencies.into_iter().collect());
    render(&Overview {
        earned,
        top_partners,
        top_links,
        chrome: Chrome::of(ctx),
        partners: ctx.app.directory.partner_count(),
        links: ctx.app.directory.link_count(),
        counted: programs.iter().map(|p| p.2).sum(),
        not_counted: programs.iter().map(|p| p.3).sum(),
        period,
        chart,
        programs,
        signups,
        paid,
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
    /// Clicks per day over the last 30 days, as SVG.
    chart: Option<String>,
}

#[derive(serde::Deserialize)]
struct FraudProfile {
    clicks: u64,
    flagged: u64,
    flagged_share: String,
    distinct_visitors: u64,
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
    let clicks: Option<super::views::CountedDays> =
        ctx.api_opt(&format!("partners/{id}/clicks/daily")).await?;
    let chart = clicks.map(|c| c.chart("Clicks per day, last 30 days"));
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
