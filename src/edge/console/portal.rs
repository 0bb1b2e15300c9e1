//! The partner portal (`/portal/`): a partner's own links (copy, QR),
//! balances, commissions with their explanations, referrals with the
//! customers masked, and payouts. Every read goes through the API as the
//! partner, whose rules answer 404 for anything of another partner's.

use super::views::{Balances, LinkPage, PartnerPayouts, Statement};
use super::{render, see_other, Chrome, Ctx};
use crate::access::Role;
use crate::edge::http::{ApiError, Body};
use crate::model::Partner;
use askama::Template;
use chrono::{DateTime, Utc};
use hyper::{Method, Response};
use serde::Deserialize;

#[derive(Deserialize)]
struct Masked {
    customer: String,
    at: DateTime<Utc>,
    #[serde(default)]
    via: Option<String>,
    #[serde(default)]
    reason: Option<serde_json::Value>,
    /// Where a review of the referral stands, if it was held.
    #[serde(default)]
    review: Option<String>,
}

impl Masked {
    fn reason(&self) -> String {
        self.reason
            .as_ref()
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .replace('_', " ")
    }
}

#[derive(Deserialize)]
struct Referrals {
    referrals: Vec<Masked>,
    rejections: Vec<Masked>,
}

#[derive(Template)]
#[template(path = "portal.html")]
struct Home {
    chrome: Chrome,
    p: Partner,
    links: LinkPage,
    balances: Balances,
    month: String,
    statement: Statement,
    referrals: Referrals,
    payouts: PartnerPayouts,
    /// The program lets partners create links: where they may point.
    new_links: Option<String>,
    /// Clicks per day, last 30 days (counted and not), as SVG.
    chart: String,
}

/// `/portal/...`
pub(super) async fn handle(ctx: &mut Ctx) -> Result<Response<Body>, ApiError> {
    let rest: Vec<String> = ctx.rest.clone();
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    if let ["signin", ..] | ["signout"] = r.as_slice() {
        return super::signin::portal(ctx, &r).await;
    }
    let pid = match &ctx.session {
        None => return Ok(see_other("/portal/signin")),
        Some((_, s)) if s.role != Role::Partner => return Ok(see_other("/console/")),
        Some((_, s)) => s.partner_id.clone().unwrap_or_default(),
    };
    match (&ctx.method, r.as_slice()) {
        (&Method::GET, []) => home(ctx, &pid).await,
        (&Method::POST, ["links"]) => {
            let mut fields: Vec<(String, String)> = ctx.form.clone();
            fields.retain(|(k, _)| k != "partner_id");
            fields.push(("partner_id".into(), pid.clone()));
            ctx.form = fields;
            let l = super::links::create_from_form(ctx).await?;
            Ok(see_other(&format!("/portal/?done=link#link-{}", l.code)))
        }
        (&Method::GET, ["links", code, file]) => super::links::qr_download(ctx, code, file).await,
        _ => Err(ApiError::NotFound("page")),
    }
}

async fn home(ctx: &Ctx, pid: &str) -> Result<Response<Body>, ApiError> {
    let month = ctx.q("month").filter(|m| m.len() == 7).map_or_else(
        || ctx.app.clock.now().format("%Y-%m").to_string(),
        str::to_string,
    );
    let month_q: String = url::form_urlencoded::byte_serialize(month.as_bytes()).collect();
    // The API masks customers for a partner's session.
    let statement: Statement = ctx
        .api(
            Method::GET,
            &format!("partners/{pid}/statement?month={month_q}"),
            None,
        )
        .await?;
    let p: Partner = ctx
        .api(Method::GET, &format!("partners/{pid}"), None)
        .await?;
    let new_links = ctx
        .app
        .config
        .programs
        .get(&p.program)
        .filter(|prog| prog.partner_links && p.status == crate::model::PartnerStatus::Active)
        .map(|prog| {
            prog.allowed_hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        });
    let clicks: super::views::CountedDays = ctx
        .api(Method::GET, &format!("partners/{pid}/clicks/daily"), None)
        .await?;
    render(&Home {
        chrome: Chrome::of(ctx),
        chart: clicks.chart("Your clicks per day, last 30 days"),
        p,
        new_links,
        links: ctx
            .api(Method::GET, &format!("partners/{pid}/links"), None)
            .await?,
        balances: ctx
            .api(Method::GET, &format!("partners/{pid}/balance"), None)
            .await?,
        referrals: ctx
            .api(Method::GET, &format!("partners/{pid}/referrals"), None)
            .await?,
        payouts: ctx
            .api(Method::GET, &format!("partners/{pid}/payouts"), None)
            .await?,
        statement,
        month,
    })
}
