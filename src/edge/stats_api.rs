//! Click statistics from the rollups (`store::rollups`): clicks per day
//! for a program, partner or link, and a link's referrer hosts and device
//! classes. Each read first rolls up every click on disk.

use super::http::{
    blocking, json, only_params, parse_time, query_pairs, ApiError, ApiRequest, Body,
};
use super::App;
use crate::store::rollups::{Scope, Tally};
use chrono::NaiveDate;
use hyper::{Response, StatusCode};
use serde_json::{json as j, Value};
use std::sync::Arc;
use std::time::Duration;

/// Longest period one read covers.
const MAX_DAYS: i64 = 400;
/// The period when none is given.
const DEFAULT_DAYS: i64 = 30;

/// `from` and `to` (dates, inclusive; the last 30 days by default).
fn period(app: &App, pairs: &[(String, String)]) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let to = match get("to") {
        Some(v) => parse_time("to", v)?.date_naive(),
        None => app.clock.now().date_naive(),
    };
    let from = match get("from") {
        Some(v) => parse_time("from", v)?.date_naive(),
        None => to - chrono::Duration::days(DEFAULT_DAYS - 1),
    };
    if from > to {
        return Err(ApiError::invalid("from", "must not be after to"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::invalid(
            "from",
            format!("a period is at most {MAX_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// Every click on disk, rolled up.
pub(super) async fn catch_up(app: &Arc<App>) -> Result<(), ApiError> {
    let _ = tokio::time::timeout(Duration::from_secs(2), app.clicklog.barrier()).await;
    let store = app.store.clone();
    blocking(move || store.roll_up_all()).await??;
    Ok(())
}

fn day_json(d: NaiveDate, t: &Tally, evidence: bool) -> Value {
    if evidence {
        j!({"date": d, "valid": t.valid, "flagged": t.flagged, "blocked": t.blocked,
            "by_reason": t.by_reason()})
    } else {
        j!({"date": d, "counted": t.valid, "not_counted": t.not_counted()})
    }
}

async fn days(
    app: &Arc<App>,
    scope: Scope,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<(NaiveDate, Tally)>, ApiError> {
    catch_up(app).await?;
    let store = app.store.clone();
    Ok(blocking(move || store.daily(&scope, from, to)).await??)
}

/// `GET /api/v1/stats/daily?program=|partner=|link=&from=&to=` (staff):
/// clicks per day by verdict and reason.
pub async fn daily(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["program", "partner", "link", "from", "to"])?;
    let (from, to) = period(&app, &pairs)?;
    let scopes: Vec<_> = pairs
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "program" | "partner" | "link"))
        .collect();
    let [(kind, name)] = scopes.as_slice() else {
        return Err(ApiError::invalid(
            "program",
            "give exactly one of program, partner or link",
        ));
    };
    if kind == "program" {
        super::money::known_program(&app, name)?;
    }
    let name = name.clone();
    let scope = match kind.as_str() {
        "program" => Scope::Program(name.clone()),
        "partner" => Scope::Partner(name.clone()),
        _ => Scope::Link(name.clone()),
    };
    let found = days(&app, scope, from, to).await?;
    let mut total = Tally::default();
    let days: Vec<Value> = found
        .iter()
        .map(|(d, t)| {
            total.add(t);
            day_json(*d, t, true)
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &j!({kind.as_str(): name, "from": from, "to": to, "days": days,
             "total": {"valid": total.valid, "flagged": total.flagged, "blocked": total.blocked,
                       "by_reason": total.by_reason()}}),
    ))
}

/// `GET /api/v1/partners/{id}/clicks/daily?from=&to=`: the partner's
/// clicks per day, counted and not counted (no fraud evidence: partners
/// read this).
pub async fn partner_daily(
    app: Arc<App>,
    req: ApiRequest,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["from", "to"])?;
    let (from, to) = period(&app, &pairs)?;
    app.directory
        .partner(id)
        .ok_or(ApiError::NotFound("partner"))?;
    let found = days(&app, Scope::Partner(id.to_string()), from, to).await?;
    let days: Vec<Value> = found.iter().map(|(d, t)| day_json(*d, t, false)).collect();
    Ok(json(
        StatusCode::OK,
        &j!({"partner_id": id, "from": from, "to": to, "days": days}),
    ))
}

/// `GET /api/v1/links/{code}/stats?from=&to=`: the link's clicks per day
/// (counted and not), by referrer host and by device class.
pub async fn link_stats(
    app: Arc<App>,
    req: ApiRequest,
    code: &str,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["from", "to"])?;
    let (from, to) = period(&app, &pairs)?;
    let a = app.clone();
    let c = code.to_string();
    blocking(move || a.directory.link(&c))
        .await??
        .ok_or(ApiError::NotFound("link"))?;
    let found = days(&app, Scope::Link(code.to_string()), from, to).await?;
    let store = app.store.clone();
    let c = code.to_string();
    let b = blocking(move || store.link_breakdown(&c, from, to)).await??;
    let days: Vec<Value> = found.iter().map(|(d, t)| day_json(*d, t, false)).collect();
    Ok(json(
        StatusCode::OK,
        &j!({"code": code, "from": from, "to": to, "days": days,
             "referrer_hosts": b.hosts, "devices": b.devices}),
    ))
}

/// `GET /api/v1/fraud/partners?from=&to=&limit=` (fraud): partners ranked
/// by the share of their clicks not counted in the period (days), from the
/// rollups.
pub async fn suspicious_partners(
    app: Arc<App>,
    req: ApiRequest,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["from", "to", "limit"])?;
    let (from, to) = period(&app, &pairs)?;
    let limit = match pairs.iter().find(|(k, _)| k == "limit") {
        Some((_, v)) => super::http::parse_limit(v)?,
        None => 20,
    };
    catch_up(&app).await?;
    let store = app.store.clone();
    let ranked = blocking(move || store.suspicious_partners(from, to, limit)).await??;
    let partners: Vec<Value> = ranked
        .into_iter()
        .map(|(p, all, bad)| {
            j!({"partner_id": p, "clicks": all, "not_counted": bad,
                "suspicious_share": format!("{:.4}", bad as f64 / all.max(1) as f64)})
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &j!({"from": from, "to": to, "partners": partners}),
    ))
}

/// `GET /api/v1/stats/top?by=partner|link&from=&to=&limit=` (staff): the
/// period's partners or links with the most counted clicks (see
/// `store::top` for how leaders are chosen).
pub async fn top(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    use crate::store::top::TopOf;
    let pairs = query_pairs(&req);
    only_params(&pairs, &["by", "from", "to", "limit"])?;
    let (from, to) = period(&app, &pairs)?;
    let of = match pairs
        .iter()
        .find(|(k, _)| k == "by")
        .map(|(_, v)| v.as_str())
    {
        None | Some("partner") => TopOf::Partners,
        Some("link") => TopOf::Links,
        Some(other) => {
            return Err(ApiError::invalid(
                "by",
                format!("{other:?} is not partner or link"),
            ))
        }
    };
    let limit = match pairs.iter().find(|(k, _)| k == "limit") {
        Some((_, v)) => super::http::parse_limit(v)?.min(MAX_TOP),
        None => 10,
    };
    catch_up(&app).await?;
    let store = app.store.clone();
    let found = blocking(move || store.top(of, from, to, limit)).await??;
    let a = app.clone();
    let rows = blocking(move || -> Result<Vec<Value>, ApiError> {
        let mut rows = Vec::with_capacity(found.len());
        for (name, t) in found {
            rows.push(match of {
                TopOf::Partners => {
                    let p = a.directory.partner(&name);
                    j!({"partner_id": name, "name": p.map(|p| p.name),
                        "counted": t.valid, "not_counted": t.not_counted()})
                }
                TopOf::Links => {
                    let l = a.directory.link(&name)?;
                    j!({"code": name, "partner_id": l.map(|l| l.partner_id),
                        "counted": t.valid, "not_counted": t.not_counted()})
                }
            });
        }
        Ok(rows)
    })
    .await??;
    Ok(json(
        StatusCode::OK,
        &j!({"by": if of == TopOf::Partners { "partner" } else { "link" },
             "from": from, "to": to, "top": rows}),
    ))
}

/// Most rows `GET /api/v1/stats/top` answers.
const MAX_TOP: usize = 100;

/// `GET /api/v1/stats/commissions?from=&to=&wait_for=` (finance): commission earned
/// and reversed per currency by ledger lines dated in the period (days).
pub async fn commissions(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["from", "to", "wait_for"])?;
    let (from, to) = period(&app, &pairs)?;
    super::money::wait(&app, &pairs).await?;
    let start = from.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let end = (to + chrono::Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let sums = app.conversions.read(|c| c.earned_between(start, end));
    let currencies: serde_json::Map<String, Value> = sums
        .into_iter()
        .map(|(cur, (earned, reversed))| {
            (
                cur,
                j!({"earned": format!("{earned:.2}"), "reversed": format!("{reversed:.2}")}),
            )
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &j!({"from": from, "to": to, "currencies": currencies}),
    ))
}
