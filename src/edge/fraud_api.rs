//! The fraud team's view: summaries, flagged clicks with their evidence,
//! and one partner's profile, read from the click log and the calculator.

use super::http::ApiRequest;
use super::http::{
    blocking, json, parse_cursor, parse_limit, parse_time_ms, query_pairs, ApiError, Body,
};
use super::App;
use crate::id::ClickId;
use crate::model::ClickRecord;
use crate::store::{ClickQuery, Store, StoreError};
use chrono::{DateTime, Utc};
use hyper::{Response, StatusCode};
use serde_json::{json as j, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Most clicks one listing reads looking for matches.
const SCAN_LIMIT: usize = 2_000_000;

struct Params {
    program: Option<String>,
    partner: Option<String>,
    reason: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: usize,
    cursor: Option<ClickId>,
}

fn params(app: &App, req: &ApiRequest, allowed: &[&str]) -> Result<Params, ApiError> {
    let mut p = Params {
        program: None,
        partner: None,
        reason: None,
        from: None,
        to: None,
        limit: 100,
        cursor: None,
    };
    for (k, v) in query_pairs(req) {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                k.as_str(),
                format!("unknown parameter; use {}", allowed.join(", ")),
            ));
        }
        match k.as_str() {
            "program" => {
                super::money::known_program(app, &v)?;
                p.program = Some(v)
            }
            "partner" => p.partner = Some(v),
            "reason" => {
                if !crate::fraud::Reason::ALL.iter().any(|r| r.label() == v) {
                    return Err(ApiError::invalid("reason", "one of bot, stuffing, rate_limited, duplicate, paid_search, token_tampered"));
                }
                p.reason = Some(v)
            }
            "from" => p.from = Some(parse_time_ms("from", &v)?),
            "to" => p.to = Some(parse_time_ms("to", &v)?),
            "limit" => p.limit = parse_limit(&v)?,
            "cursor" => p.cursor = Some(parse_cursor(&v)?),
            _ => {}
        }
    }
    Ok(p)
}

/// Where clicks are read: this node's log, or on a cluster's calculator
/// every edge's clicks.
#[derive(Clone)]
pub(super) struct Clicks {
    store: Store,
    cluster: bool,
}

impl Clicks {
    pub(super) fn of(app: &App) -> Self {
        Self {
            store: app.store.clone(),
            cluster: app.cluster.is_some() && app.calculates(),
        }
    }

    pub(super) fn page(&self, q: &ClickQuery) -> Result<crate::store::ClickPage, StoreError> {
        if self.cluster {
            self.store.cluster_clicks_page(q)
        } else {
            self.store.clicks(q)
        }
    }

    /// The time of the first click kept, if any.
    pub(super) fn first_click_ms(&self) -> Result<Option<i64>, StoreError> {
        let q = ClickQuery {
            limit: 1,
            ..ClickQuery::default()
        };
        Ok(self
            .page(&q)?
            .clicks
            .first()
            .map(|c| c.at.timestamp_millis()))
    }
}

/// Calls `f` on every click matching, oldest first, until it returns
/// false or `limit` clicks were read.
pub(super) fn scan(
    store: &Clicks,
    mut q: ClickQuery,
    limit: usize,
    mut f: impl FnMut(&ClickRecord) -> bool,
) -> Result<(), StoreError> {
    q.limit = 1000;
    let mut seen = 0;
    loop {
        let page = store.page(&q)?;
        for c in &page.clicks {
            seen += 1;
            if !f(c) || seen >= limit {
                return Ok(());
            }
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => return Ok(()),
        }
    }
}

/// `GET /api/v1/fraud/summary?program=&from=&to=` (see
/// [`super::fraud_summary`]): `to` defaults to now, `from` to the first
/// click.
pub async fn summary(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let p = params(&app, &req, &["program", "from", "to"])?;
    let to = p.to.unwrap_or_else(|| app.clock.now_ms().saturating_add(1));
    if p.from.is_some_and(|f| f > to) {
        return Err(ApiError::invalid("from", "must not be after to"));
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), app.clicklog.barrier()).await;
    let out = super::fraud_summary::summary(&app, p.program, p.from, to).await?;
    Ok(json(StatusCode::OK, &out))
}

/// `GET /api/v1/fraud/clicks?partner=&reason=&from=&to=&limit=&cursor=`:
/// flagged clicks with the rule that fired and on which value.
pub async fn clicks(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let p = params(
        &app,
        &req,
        &["partner", "reason", "from", "to", "limit", "cursor"],
    )?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), app.clicklog.barrier()).await;
    let store = Clicks::of(&app);
    let q = ClickQuery {
        partner: p.partner.clone(),
        from_ms: p.from,
        to_ms: p.to,
        after: p.cursor,
        ..ClickQuery::default()
    };
    let (limit, reason) = (p.limit, p.reason.clone());
    let (found, more) = blocking(move || -> Result<(Vec<ClickRecord>, bool), StoreError> {
        let mut out = Vec::new();
        let mut more = false;
        scan(&store, q, SCAN_LIMIT, |c| {
            let hit = c.verdict != "valid"
                && reason
                    .as_ref()
                    .is_none_or(|r| c.flags.iter().any(|f| f.reason.label() == r));
            if hit {
                if out.len() == limit {
                    more = true;
                    return false;
                }
                out.push(c.clone());
            }
            true
        })?;
        Ok((out, more))
    })
    .await??;
    let next = if more {
        found.last().map(|c| c.id.to_string())
    } else {
        None
    };
    Ok(json(
        StatusCode::OK,
        &j!({"clicks": found, "next_cursor": next}),
    ))
}

/// `GET /api/v1/fraud/partners/{id}`: clicks and flagged share by reason per
/// day, rejected signups, distinct visitors, click-to-signup times.
pub async fn partner(app: Arc<App>, id: String) -> Result<Response<Body>, ApiError> {
    let partner = app
        .directory
        .partner(&id)
        .ok_or(ApiError::NotFound("partner"))?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), app.clicklog.barrier()).await;
    let store = Clicks::of(&app);
    let pid = id.clone();
    let (days, visitors, total, flagged) = blocking(move || -> Result<_, StoreError> {
        let mut days: BTreeMap<String, (u64, u64, BTreeMap<String, u64>)> = BTreeMap::new();
        let mut visitors: HashSet<String> = HashSet::new();
        let (mut total, mut flagged) = (0u64, 0u64);
        scan(
            &store,
            ClickQuery {
                partner: Some(pid),
                ..ClickQuery::default()
            },
            SCAN_LIMIT,
            |c| {
                total += 1;
                visitors.insert(c.ip_hash.clone());
                let day = days.entry(c.at.format("%Y-%m-%d").to_string()).or_default();
                day.0 += 1;
                if c.verdict != "valid" {
                    flagged += 1;
                    day.1 += 1;
                    for f in &c.flags {
                        *day.2.entry(f.reason.label().to_string()).or_default() += 1;
                    }
                }
                true
            },
        )?;
        Ok((days, visitors.len(), total, flagged))
    })
    .await??;
    let (rejections, click_to_signup) = app.conversions.read(|c| {
        let rejections: Vec<Value> = c
            .state
            .rejections
            .iter()
            .filter(|r| r.partner_id.as_deref() == Some(id.as_str()))
            .map(|r| j!({"customer_id": r.customer_id, "reason": r.reason, "detail": r.detail, "at": r.at}))
            .collect();
        let times: Vec<i64> = c
            .state
            .referrals
            .iter()
            .filter(|r| r.partner_id == id)
            .filter_map(|r| {
                let click: ClickId = r.click_id.as_ref()?.parse().ok()?;
                Some((r.at.timestamp_millis() - click.timestamp_ms()) / 1000)
            })
            .collect();
        (rejections, times)
    });
    let days: Vec<Value> = days
        .into_iter()
        .map(|(d, (clicks, flagged, reasons))| {
            j!({"date": d, "clicks": clicks, "flagged": flagged, "flagged_by_reason": reasons})
        })
        .collect();
    let at: DateTime<Utc> = app.clock.now();
    let velocity = cluster_velocity(&app, &partner).await?;
    Ok(json(
        StatusCode::OK,
        &j!({
            "partner_id": partner.id, "status": partner.status, "as_of": at,
            "cluster_velocity": velocity,
            "clicks": total, "flagged": flagged,
            "flagged_share": format!("{:.4}", flagged as f64 / total.max(1) as f64),
            "distinct_visitors": visitors, "days": days,
            "rejected_signups": rejections, "click_to_signup_seconds": click_to_signup,
        }),
    ))
}

/// Cluster mode, on a calculator: the seconds in which the partner's
/// clicks on every edge together exceeded its program's
/// `partner_per_second` (the per-node limiter's limit, unchanged: each
/// node enforces it on its own traffic, this catches traffic spread over
/// nodes). `null` on a single node.
async fn cluster_velocity(
    app: &Arc<App>,
    partner: &crate::model::Partner,
) -> Result<Value, ApiError> {
    if app.cluster.is_none() || !app.calculates() {
        return Ok(Value::Null);
    }
    let limit = app
        .config
        .programs
        .get(&partner.program)
        .map(|p| {
            p.fraud
                .partner_limits
                .get(&partner.id)
                .copied()
                .unwrap_or(p.fraud.partner_per_second)
        })
        .unwrap_or(u32::MAX);
    let store = app.store.clone();
    let pid = partner.id.clone();
    let over = blocking(move || store.cluster_velocity(&pid, limit)).await??;
    let seconds: Vec<Value> = over
        .into_iter()
        .map(|(s, n)| j!({"second": crate::clock::ms_to_datetime(s * 1000), "clicks": n}))
        .collect();
    Ok(j!({"limit_per_second": limit, "flagged": !seconds.is_empty(), "seconds_over": seconds}))
}
