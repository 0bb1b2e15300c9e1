//! The console's fraud page: flagged clicks with their evidence, filtered
//! by reason, partner and time; clicks by verdict and reason; partners
//! ranked by suspicious share; refused signups.

use super::{render, Chrome, Ctx};
use crate::edge::http::{ApiError, Body};
use askama::Template;
use chrono::{DateTime, Utc};
use hyper::{Method, Response};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct FlagView {
    reason: String,
    evidence: String,
}

#[derive(Deserialize)]
struct ClickView {
    id: String,
    at: DateTime<Utc>,
    link: String,
    partner_id: String,
    verdict: String,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    referer: Option<String>,
    ip_prefix: String,
    #[serde(default)]
    flags: Vec<FlagView>,
}

#[derive(Deserialize)]
struct FlaggedPage {
    clicks: Vec<ClickView>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Ranked {
    partner_id: String,
    clicks: u64,
    not_counted: u64,
    suspicious_share: String,
}

#[derive(Deserialize)]
struct RankedPage {
    partners: Vec<Ranked>,
}

#[derive(Deserialize)]
struct Total {
    valid: u64,
    flagged: u64,
    blocked: u64,
    by_reason: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct ProgramStats {
    total: Total,
}

/// The period's clicks over every program, from the rollups.
#[derive(Default)]
struct Summary {
    clicks: u64,
    by_verdict: BTreeMap<String, u64>,
    by_reason: BTreeMap<String, u64>,
    top_partners: Vec<Ranked>,
}

#[derive(Deserialize)]
struct Rejection {
    customer_id: String,
    #[serde(default)]
    partner_id: Option<String>,
    reason: String,
    detail: String,
    at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Referrals {
    rejections: Vec<Rejection>,
}

#[derive(Template)]
#[template(path = "fraud.html")]
struct Page {
    chrome: Chrome,
    reasons: Vec<String>,
    reason: String,
    partner: String,
    from: String,
    to: String,
    summary: Summary,
    flagged: FlaggedPage,
    rejections: Vec<Rejection>,
    next: Option<String>,
}

/// Refused signups shown (newest first).
const REJECTIONS_SHOWN: usize = 50;

/// `GET /console/fraud?reason=&partner=&from=&to=&cursor=`
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    if !(ctx.method == Method::GET && r.is_empty()) {
        return Err(ApiError::NotFound("page"));
    }
    let get = |k: &str| ctx.q(k).unwrap_or_default().trim().to_string();
    let (reason, partner, from, to) = (get("reason"), get("partner"), get("from"), get("to"));
    // The period: the last 7 days unless given.
    let from_q = if from.is_empty() {
        (ctx.app.clock.now() - chrono::Duration::days(7))
            .format("%Y-%m-%d")
            .to_string()
    } else {
        from.clone()
    };
    // (The serializers are not Send: done with before the first await.)
    let (period, flagged_q) = {
        let mut filter = url::form_urlencoded::Serializer::new(String::new());
        filter.append_pair("from", &from_q);
        if !to.is_empty() {
            filter.append_pair("to", &to);
        }
        let period = filter.finish();
        let mut flagged_q = url::form_urlencoded::Serializer::new(period.clone());
        if !reason.is_empty() {
            flagged_q.append_pair("reason", &reason);
        }
        if !partner.is_empty() {
            flagged_q.append_pair("partner", &partner);
        }
        flagged_q.append_pair("limit", "50");
        if let Some(c) = ctx.q("cursor") {
            flagged_q.append_pair("cursor", c);
        }
        (period, flagged_q.finish())
    };
    // Totals and ranking from the rollups (whole days); the flagged
    // clicks themselves from the log.
    let mut summary = Summary::default();
    for key in ctx.app.config.programs.keys() {
        let s: ProgramStats = ctx
            .api(
                Method::GET,
                &format!("stats/daily?program={key}&{period}"),
                None,
            )
            .await?;
        let t = s.total;
        summary.clicks += t.valid + t.flagged + t.blocked;
        for (v, n) in [
            ("valid", t.valid),
            ("flagged", t.flagged),
            ("blocked", t.blocked),
        ] {
            *summary.by_verdict.entry(v.into()).or_default() += n;
        }
        for (r, n) in t.by_reason {
            *summary.by_reason.entry(r).or_default() += n;
        }
    }
    let ranked: RankedPage = ctx
        .api(Method::GET, &format!("fraud/partners?{period}"), None)
        .await?;
    summary.top_partners = ranked.partners;
    let flagged: FlaggedPage = ctx
        .api(Method::GET, &format!("fraud/clicks?{flagged_q}"), None)
        .await?;
    let refs: Option<Referrals> = ctx
        .api_opt(&format!("referrals?limit={REJECTIONS_SHOWN}"))
        .await?;
    let mut rejections = refs.map(|r| r.rejections).unwrap_or_default();
    rejections.reverse();
    rejections.truncate(REJECTIONS_SHOWN);
    let next = flagged.next_cursor.as_ref().map(|c| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("reason", &reason)
            .append_pair("partner", &partner)
            .append_pair("from", &from)
            .append_pair("to", &to)
            .append_pair("cursor", c)
            .finish()
    });
    render(&Page {
        chrome: Chrome::of(ctx),
        reasons: crate::fraud::Reason::ALL
            .iter()
            .map(|r| r.label().to_string())
            .collect(),
        reason,
        partner,
        from: from_q,
        to,
        summary,
        flagged,
        rejections,
        next,
    })
}
