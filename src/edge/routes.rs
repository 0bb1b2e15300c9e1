//! Routing: every request's route, who is asking (the admin token or an
//! API key) and whether their role may use it, and on a cluster's edge the
//! ledger routes sent on to the active calculator.

use super::http::{self, text, ApiError, ApiRequest, Body};
use super::{
    api, api_keys, console, fraud_api, money, partner_reads, readiness, redirect, reviews,
    stats_api, webhooks_api, App,
};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// Route patterns used as metric labels (the described routes', see
/// [`super::openapi`]); `other` for anything else.
fn route_label(segments: &[&str]) -> &'static str {
    super::openapi::path_route(segments).map_or("other", |r| r.path)
}

/// Whether `rest` (the path after `/api/v1/`) is one of the API's routes.
fn is_api_route(rest: &[&str]) -> bool {
    let mut full = vec!["api", "v1"];
    full.extend_from_slice(rest);
    !rest.is_empty() && route_label(&full) != "other"
}

pub(super) async fn route(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    // The hot path: no allocation to route a click, no label lookup to count it.
    if let Some(code) = req
        .uri()
        .path()
        .strip_prefix("/r/")
        .filter(|c| !c.contains('/'))
    {
        let resp = redirect::redirect(&app, peer, &req, code);
        app.count_redirect_response(resp.status());
        return resp;
    }
    let path = req.uri().path().to_owned();
    for (prefix, portal) in [("/console", false), ("/portal", true)] {
        if path == prefix {
            return console::see_other(&format!("{prefix}/"));
        }
        if path.starts_with(prefix) && path[prefix.len()..].starts_with('/') {
            let resp = console::route(app.clone(), peer, req, portal).await;
            app.metrics
                .http_responses
                .with_label_values(&[prefix, resp.status().as_str()])
                .inc();
            return resp;
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let label = route_label(&segments);
    let resp = dispatch(&app, req.map(http_body_util::Either::Left), &segments)
        .await
        .unwrap_or_else(ApiError::into_response);
    app.metrics
        .http_responses
        .with_label_values(&[label, resp.status().as_str()])
        .inc();
    resp
}

async fn dispatch(
    app: &Arc<App>,
    req: ApiRequest,
    segments: &[&str],
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::GET, ["healthz"]) => return Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, ["readyz"]) => return Ok(readiness(app).await),
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(http_body_util::Full::new(app.metrics.render().into()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return Ok(r);
        }
        (&Method::POST, ["integrations", "stripe", program]) => {
            // Signed by Stripe; the calculator answers (it knows which
            // invoice a payment paid).
            if !app.calculates() {
                return to_calculator(app, req).await;
            }
            return super::stripe::receive(app.clone(), req, program).await;
        }
        (_, ["api", "v1", ..]) => {}
        _ => return Err(ApiError::NotFound("route")),
    }
    let signed_events =
        method == Method::POST && segments[2..] == ["events"] && money::is_signed(&req);
    if signed_events {
        return money::post_events(app.clone(), req, true).await;
    }
    let principal = principal(app, &req).ok_or(ApiError::Unauthorized)?;
    api_as(app, &principal, req, &segments[2..]).await
}

/// An API call (the path after `/api/v1/`, split on `/`) made as `p`: the
/// role's rule, then the handler. The console and portal call the API
/// through here as their signed-in principal.
pub(super) async fn api_as(
    app: &Arc<App>,
    p: &crate::access::Principal,
    req: ApiRequest,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    // Only described routes are served: a handler cannot exist without
    // its entry in the OpenAPI description.
    let mut full = vec!["api", "v1"];
    full.extend_from_slice(rest);
    if super::openapi::find(&method, &full).is_none() {
        return Err(if is_api_route(rest) {
            ApiError::MethodNotAllowed
        } else {
            ApiError::NotFound("route")
        });
    }
    permit(app, p, &method, rest).await?;
    if !app.calculates() && is_ledger_route(&method, rest) {
        return to_calculator(app, req).await;
    }
    match (&method, rest) {
        (&Method::POST, ["partners"]) => api::create_partner(app.clone(), req).await,
        (&Method::GET, ["partners", id]) => api::get_partner(app, id),
        (&Method::POST, ["links"]) => {
            let owner = (p.role == crate::access::Role::Partner)
                .then(|| p.partner_id.clone().unwrap_or_default());
            api::create_link(app.clone(), req, owner.as_deref()).await
        }
        (&Method::GET, ["links", code]) => api::get_link(app.clone(), code).await,
        (&Method::DELETE, ["links", code]) => {
            api::disable_link(app.clone(), code.to_string()).await
        }
        (&Method::GET, ["clicks"]) => api::list_clicks(app.clone(), req).await,
        (&Method::GET, ["clicks", id]) => {
            let id = id.to_string();
            api::get_click(app.clone(), &id).await
        }
        (&Method::GET, ["keys"]) => Ok(api::list_keys(app)),
        (&Method::POST, ["keys", "rotate"]) => api::change_keys(app.clone(), req, None).await,
        (&Method::POST, ["keys", id, "retire"]) => {
            let id = id.to_string();
            api::change_keys(app.clone(), req, Some(&id)).await
        }
        (&Method::PATCH, ["partners", id]) => {
            let id = id.to_string();
            api::patch_partner(app.clone(), req, id).await
        }
        (&Method::GET, ["partners", id, "audit"]) => api::partner_audit(app, id),
        (&Method::GET, ["fraud", "partners"]) => {
            stats_api::suspicious_partners(app.clone(), req).await
        }
        (&Method::GET, ["fraud", "summary"]) => fraud_api::summary(app.clone(), req).await,
        (&Method::GET, ["fraud", "clicks"]) => fraud_api::clicks(app.clone(), req).await,
        (&Method::GET, ["fraud", "partners", id]) => {
            fraud_api::partner(app.clone(), id.to_string()).await
        }
        (&Method::POST, ["events"]) => money::post_events(app.clone(), req, false).await,
        (&Method::GET, ["openapi.json"]) => {
            Ok(http::json(StatusCode::OK, super::openapi::document()))
        }
        (&Method::POST, ["webhooks"]) => webhooks_api::create(app.clone(), req).await,
        (&Method::GET, ["webhooks"]) => webhooks_api::list(app.clone()).await,
        (&Method::GET, ["webhooks", id]) => webhooks_api::get(app.clone(), id).await,
        (&Method::DELETE, ["webhooks", id]) => webhooks_api::delete(app.clone(), id).await,
        (&Method::POST, ["webhooks", id, "enable"]) => webhooks_api::enable(app.clone(), id).await,
        (&Method::GET, ["webhooks", id, "deliveries"]) => {
            webhooks_api::deliveries(app.clone(), req, id).await
        }
        (&Method::POST, ["webhooks", id, "deliveries", d, "redeliver"]) => {
            webhooks_api::redeliver(app.clone(), id, d).await
        }
        (&Method::PUT, ["partners", id, "postback"]) => {
            let id = id.to_string();
            webhooks_api::put_postback(app.clone(), req, &id).await
        }
        (&Method::GET, ["partners", id, "postback"]) => {
            webhooks_api::get_postback(app.clone(), id).await
        }
        (&Method::DELETE, ["partners", id, "postback"]) => {
            webhooks_api::delete_postback(app.clone(), id).await
        }
        (&Method::POST, ["fx-rates"]) => money::post_fx_rates(app.clone(), req).await,
        (&Method::POST, ["coupons"]) => money::post_coupon(app.clone(), req).await,
        (&Method::GET, ["coupons", code]) => {
            let code = code.to_string();
            money::get_coupon(app.clone(), req, &code).await
        }
        (&Method::GET, ["partners", id, "balance"]) => {
            let id = id.to_string();
            money::balance(app.clone(), req, &id).await
        }
        (&Method::GET, ["partners", id, "statement"]) => {
            let id = id.to_string();
            let mask = p.role == crate::access::Role::Partner;
            money::statement(app.clone(), req, &id, mask).await
        }
        (&Method::GET, ["referrals"]) => money::referrals(app.clone(), req).await,
        (&Method::GET, ["problems"]) => money::problems(app, &req),
        (&Method::GET, ["customers", id]) => {
            let id = id.to_string();
            money::customer(app.clone(), req, &id).await
        }
        (&Method::POST, ["api-keys"]) => api_keys::create(app.clone(), req).await,
        (&Method::GET, ["api-keys"]) => Ok(api_keys::list(app)),
        (&Method::DELETE, ["api-keys", id]) => {
            let id = id.to_string();
            api_keys::revoke(app.clone(), &id).await
        }
        (&Method::GET, ["stats", "daily"]) => stats_api::daily(app.clone(), req).await,
        (&Method::GET, ["stats", "top"]) => stats_api::top(app.clone(), req).await,
        (&Method::GET, ["stats", "commissions"]) => stats_api::commissions(app.clone(), req).await,
        (&Method::GET, ["partners", id, "clicks", "daily"]) => {
            let id = id.to_string();
            stats_api::partner_daily(app.clone(), req, &id).await
        }
        (&Method::GET, ["links", code, "stats"]) => {
            let code = code.to_string();
            stats_api::link_stats(app.clone(), req, &code).await
        }
        (&Method::GET, ["payouts"]) => money::list_payouts(app.clone(), req).await,
        (&Method::GET, ["partners"]) => partner_reads::list(app, &req),
        (&Method::GET, ["partners", id, "links"]) => {
            let id = id.to_string();
            partner_reads::links(app.clone(), req, &id).await
        }
        (&Method::GET, ["partners", id, "referrals"]) => partner_reads::referrals(app, id),
        (&Method::GET, ["partners", id, "payouts"]) => partner_reads::payouts(app, id),
        (&Method::POST, ["partners", id, "portal-link"]) => {
            let id = id.to_string();
            partner_reads::portal_link(app.clone(), &id).await
        }
        (&Method::POST, ["payouts", "run"]) => money::run_payouts(app.clone(), req).await,
        (&Method::GET, ["payouts", id]) => {
            let id = id.to_string();
            money::get_payout(app.clone(), req, &id).await
        }
        (&Method::GET, ["payouts", id, "csv"]) => money::payout_csv(app.clone(), id).await,
        (&Method::POST, ["payouts", id, "confirm"]) => money::confirm_payout(app.clone(), id).await,
        (&Method::GET, ["reviews"]) => reviews::list(app.clone(), req).await,
        (&Method::GET, ["reviews", id]) => reviews::get(app, id),
        (&Method::POST, ["reviews", id]) => {
            let who = p
                .key_id
                .as_ref()
                .map_or_else(|| "admin".to_string(), |k| format!("key {k}"));
            reviews::decide(app.clone(), req, id.to_string(), who).await
        }
        (_, known) if is_api_route(known) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound("route")),
    }
}

/// Routes answered from the ledger, which an edge node does not keep.
fn is_ledger_route(method: &Method, rest: &[&str]) -> bool {
    matches!(
        (method, rest),
        (&Method::POST, ["fx-rates"])
            | (_, ["coupons", ..])
            | (
                &Method::GET,
                ["partners", _, "balance" | "statement" | "audit" | "referrals" | "payouts"]
            )
            // Sign-in links are kept by the calculator that serves the portal.
            | (&Method::POST, ["partners", _, "portal-link"])
            // A standing change answers with the audit log, the ledger's.
            | (&Method::PATCH, ["partners", _])
            | (&Method::GET, ["referrals" | "problems"])
            | (&Method::GET, ["customers", _])
            | (_, ["payouts", ..])
            | (_, ["reviews", ..])
            // Every edge's clicks are on the calculators, and so are their
            // rollups.
            | (&Method::GET, ["clicks"] | ["fraud", ..] | ["stats", ..])
            | (&Method::GET, ["links", _, "stats"])
            | (&Method::GET, ["partners", _, "clicks", "daily"])
            // The outbox is the calculator's: it queues what the ledger did.
            | (_, ["webhooks", ..])
            | (_, ["partners", _, "postback"])
    )
}

/// Sends a ledger route on to the active calculator (cluster mode, edge
/// nodes); a request that was forwarded once is never sent on again.
async fn to_calculator(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    use crate::cluster::forward::{forward, Forward, FORWARDED_HEADER};
    if req.headers().contains_key(FORWARDED_HEADER) {
        return Err(ApiError::Unavailable(
            "forwarded to a node that keeps no ledger".into(),
        ));
    }
    let cluster = app.cluster.as_ref().expect("edge nodes are cluster nodes");
    let Some(holder) = cluster.lease.holder() else {
        return Err(ApiError::Unavailable(
            "no calculator holds the lease at the moment".into(),
        ));
    };
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), ToString::to_string);
    let authorization = req.headers().get(AUTHORIZATION).cloned();
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    let extra = [super::stripe::SIGNATURE_HEADER]
        .into_iter()
        .filter_map(|h| {
            let v = req.headers().get(h)?.clone();
            Some((hyper::header::HeaderName::from_static(h), v))
        })
        .collect();
    let body = http::read_body(req, app.config.max_body_bytes).await?;
    forward(
        &holder.api_url,
        &holder.node_id,
        Forward {
            method,
            path,
            authorization,
            content_type,
            extra,
            body,
        },
    )
    .await
}

/// Who `Authorization: Bearer <token>` is: the admin token or a live API
/// key; the scheme name is case-insensitive (RFC 7235 §2.1).
fn principal(app: &App, req: &ApiRequest) -> Option<crate::access::Principal> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())?;
    if app.admin.check(token) {
        return Some(crate::access::Principal::admin_token());
    }
    app.keys.authenticate(token, app.clock.now())
}

/// Whether `p` may use this route (see [`crate::access::check`]): `403`
/// for another role's route; for a partner key, `404` for anything of
/// another partner's, as if it did not exist.
async fn permit(
    app: &Arc<App>,
    p: &crate::access::Principal,
    method: &Method,
    rest: &[&str],
) -> Result<(), ApiError> {
    use crate::access::Access;
    match crate::access::check(p, method, rest) {
        Access::Allowed => Ok(()),
        Access::Denied => Err(ApiError::Forbidden(format!(
            "a {} key may not {method} /api/v1/{}",
            p.role.label(),
            rest.join("/")
        ))),
        Access::OwnPartner(i) => {
            if p.partner_id.as_deref() == rest.get(i).copied() {
                Ok(())
            } else {
                Err(ApiError::NotFound("partner"))
            }
        }
        Access::OwnLink(i) => {
            let code = rest.get(i).copied().unwrap_or_default().to_string();
            let a = app.clone();
            let link = http::blocking(move || a.directory.link(&code)).await??;
            match (link, &p.partner_id) {
                (Some(l), Some(mine)) if &l.partner_id == mine => Ok(()),
                _ => Err(ApiError::NotFound("link")),
            }
        }
    }
}
