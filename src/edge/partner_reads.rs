//! Reads about partners beyond the record itself: the partner list and
//! search, a partner's links, referrals (customers masked) and payouts,
//! and staff-made one-time sign-in links to the partner portal.

use super::http::{
    blocking, json, only_params, parse_limit, query_pairs, ApiError, ApiRequest, Body,
};
use super::App;
use crate::model::{Partner, PartnerStatus};
use hyper::{Response, StatusCode};
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize)]
struct PartnerPage {
    partners: Vec<Partner>,
    /// Pass back as `after` for the next page.
    next: Option<String>,
    total: usize,
}

/// `GET /api/v1/partners?q=&program=&status=&limit=&after=`: newest
/// first; `q` matches the id, name, e-mail or website, ignoring case.
pub fn list(app: &App, req: &ApiRequest) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(req);
    only_params(&pairs, &["q", "program", "status", "limit", "after"])?;
    let mut limit = 50;
    let (mut q, mut program, mut status, mut after) = (None, None, None, None);
    for (k, v) in &pairs {
        match k.as_str() {
            "q" => q = Some(v.trim().to_lowercase()).filter(|s| !s.is_empty()),
            "program" => {
                super::money::known_program(app, v)?;
                program = Some(v.clone());
            }
            "status" => {
                status = Some(match v.as_str() {
                    "active" => PartnerStatus::Active,
                    "suspended" => PartnerStatus::Suspended,
                    "terminated" => PartnerStatus::Terminated,
                    _ => {
                        return Err(ApiError::invalid(
                            "status",
                            "must be active, suspended or terminated",
                        ))
                    }
                })
            }
            "limit" => limit = parse_limit(v)?,
            _ => after = Some(v.clone()),
        }
    }
    let keep = |p: &Partner| {
        program.as_ref().is_none_or(|x| &p.program == x)
            && status.is_none_or(|s| p.status == s)
            && q.as_ref().is_none_or(|q| {
                [&p.id, &p.name, &p.email, &p.website]
                    .iter()
                    .any(|f| f.to_lowercase().contains(q.as_str()))
            })
    };
    let (partners, more) = app.directory.partners_page(after.as_deref(), limit, keep);
    let next = more
        .then(|| partners.last().map(|p| p.id.clone()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        &PartnerPage {
            partners,
            next,
            total: app.directory.partner_count(),
        },
    ))
}

/// `GET /api/v1/partners/{id}/links?limit=&after=`: by code.
pub async fn links(app: Arc<App>, req: ApiRequest, id: &str) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["limit", "after"])?;
    let mut limit = 100;
    let mut after = None;
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => limit = parse_limit(&v)?,
            _ => after = Some(v),
        }
    }
    app.directory
        .partner(id)
        .ok_or(ApiError::NotFound("partner"))?;
    let a = app.clone();
    let pid = id.to_string();
    let mut links = blocking(move || a.store.links_of(&pid, after.as_deref(), limit + 1)).await??;
    let more = links.len() > limit;
    links.truncate(limit);
    let next = more.then(|| links.last().map(|l| l.code.clone())).flatten();
    let out: Vec<_> = links
        .iter()
        .map(|l| super::api::link_out(&app, l, app.link_clicks(&l.code)))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"links": out, "next": next}),
    ))
}

/// A customer reference as a partner may see it: the first character, and
/// an address's domain (`a***@example.com`, `c***`).
pub fn mask_customer(id: &str) -> String {
    let first: String = id.chars().take(1).collect();
    match id.split_once('@') {
        Some((_, domain)) => format!("{first}***@{domain}"),
        None => format!("{first}***"),
    }
}

/// `GET /api/v1/partners/{id}/referrals`: the partner's referrals and
/// refused signups, newest first, customers masked and without the
/// evidence (staff read `GET /api/v1/referrals`).
pub fn referrals(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let out = app.conversions.read(|c| {
        c.partner(id)?;
        let mut referrals: Vec<_> = c
            .state
            .referrals
            .iter()
            .filter(|r| r.partner_id == id)
            .map(|r| {
                serde_json::json!({
                    "customer": mask_customer(&r.customer_id), "at": r.at,
                    "via": r.via, "program": r.program,
                    "review": c.review_of(&r.program, &r.customer_id).map(|v| v.status),
                })
            })
            .collect();
        let mut rejections: Vec<_> = c
            .state
            .rejections
            .iter()
            .filter(|r| r.partner_id.as_deref() == Some(id))
            .map(|r| {
                serde_json::json!({
                    "customer": mask_customer(&r.customer_id), "at": r.at,
                    "reason": r.reason, "program": r.program,
                })
            })
            .collect();
        referrals.reverse();
        rejections.reverse();
        Some(
            serde_json::json!({"partner_id": id, "referrals": referrals, "rejections": rejections}),
        )
    });
    out.map(|v| json(StatusCode::OK, &v))
        .ok_or(ApiError::NotFound("partner"))
}

/// `GET /api/v1/partners/{id}/payouts`: the partner's items in every
/// payout batch, newest first.
pub fn payouts(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let out = app.conversions.read(|c| {
        c.partner(id)?;
        let mut items: Vec<_> = c
            .state
            .payouts
            .values()
            .flat_map(|b| {
                b.items.iter().filter(|i| i.partner_id == id).map(|i| {
                    serde_json::json!({
                        "payout_id": b.id, "as_of": b.as_of, "status": b.status,
                        "amount": format!("{:.2}", i.amount), "currency": i.currency,
                        "method": i.method,
                    })
                })
            })
            .collect();
        items.sort_by(|a, b| b["as_of"].as_str().cmp(&a["as_of"].as_str()));
        Some(serde_json::json!({"partner_id": id, "payouts": items}))
    });
    out.map(|v| json(StatusCode::OK, &v))
        .ok_or(ApiError::NotFound("partner"))
}

/// `POST /api/v1/partners/{id}/portal-link`: a one-time link that signs
/// the partner in to the portal, valid for `console.signin_link_hours`.
pub async fn portal_link(app: Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let p = app
        .directory
        .partner(id)
        .ok_or(ApiError::NotFound("partner"))?;
    let valid = chrono::Duration::hours(app.config.console.signin_link_hours as i64);
    let now = app.clock.now();
    let a = app.clone();
    let (secret, link) = blocking(move || a.sessions.new_signin_link(&p.id, valid, now)).await??;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({
            "partner_id": link.partner_id,
            "url": format!("{}/portal/signin/{secret}", app.public_url),
            "expires_at": link.expires_at,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::mask_customer;

    #[test]
    fn customers_are_masked() {
        assert_eq!(mask_customer("alice@example.com"), "a***@example.com");
        assert_eq!(mask_customer("cus_12345"), "c***");
        assert_eq!(mask_customer("élan@x.io"), "é***@x.io");
        assert_eq!(mask_customer(""), "***");
    }
}
