//! `/api/v1/webhooks` (admin): merchants' endpoints — create (the secret
//! shown once), list, read, delete, enable again — their delivery logs and
//! redelivery; and `/api/v1/partners/{id}/postback`: a partner's postback
//! template (put, read, remove).

use super::http::{blocking, json, query_pairs, read_json, ApiError, ApiRequest, Body};
use super::App;
use crate::clock::Clock;
use crate::webhooks::change::Change;
use crate::webhooks::model::{Delivery, Endpoint, State};
use crate::webhooks::{postback, EVENT_TYPES, POSTBACK_DEFAULT, POSTBACK_TYPES};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json as j, Value};
use std::sync::Arc;

/// Most deliveries one log read lists.
const MAX_LOG: usize = 500;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointIn {
    url: String,
    events: Vec<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PostbackIn {
    url_template: String,
    #[serde(default)]
    events: Option<Vec<String>>,
}

/// An endpoint as the API shows it (never its secret).
fn endpoint_json(e: &Endpoint) -> Value {
    let mut v = j!({
        "id": e.id, "url": e.url, "events": e.events, "created_at": e.created_at,
        "enabled": e.disabled.is_none(), "failures_in_a_row": e.failures,
    });
    if let Some(d) = &e.disabled {
        v["disabled_at"] = j!(d.at);
        v["disabled_reason"] = j!(d.reason);
    }
    v
}

fn delivery_json(d: &Delivery) -> Value {
    j!({
        "id": d.id, "event_id": d.event_id, "event_type": d.event_type, "state": d.state,
        "created_at": d.created_at, "next_attempt_at": d.next_at, "attempts": d.attempts,
    })
}

/// Checks a list of event types against those allowed.
fn event_types(events: &[String], allowed: &[&str], field: &str) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(field, "name at least one event type"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if !allowed.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                format!("{field}[{i}]"),
                format!("{e:?} is not one of {}", allowed.join(", ")),
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// A merchant endpoint's URL: https, or http to a loopback address (for
/// testing), no credentials in it.
fn check_url(raw: &str) -> Result<url::Url, ApiError> {
    let url = url::Url::parse(raw.trim())
        .map_err(|e| ApiError::invalid("url", format!("is not an absolute URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            "url",
            "must not carry a user name or password",
        ));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(ApiError::invalid("url", "has no host")),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(ApiError::invalid(
            "url",
            "must be https (http only to a loopback address, for testing)",
        )),
        other => Err(ApiError::invalid("url", format!("{other}: is not https"))),
    }
}

fn random_hex(app: &App, bytes: usize) -> Result<String, ApiError> {
    let mut b = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&app.rng, &mut b)
        .map_err(|_| ApiError::Internal("no randomness".into()))?;
    Ok(crate::net::to_hex(&b))
}

/// How long a cluster node waits to apply its own endpoint change from
/// the stream before answering anyway (the change is durable there).
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes an endpoint change: at once on a single node (at the event log's
/// position now); in a cluster through the event stream, which every
/// calculator applies, this one before it answers.
async fn change(app: &Arc<App>, c: Change) -> Result<(), ApiError> {
    let Some(cluster) = &app.cluster else {
        let a = app.clone();
        let seq = app.conversions.applied();
        return Ok(blocking(move || c.apply(&a.store, seq)).await??);
    };
    let seq = cluster
        .publish_change(&c)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the cluster did not take the change: {e}")))?;
    // The calculator passes the change's sequence once it is stored.
    if !app.conversions.wait_for(seq, APPLY_WAIT).await {
        tracing::warn!(seq, endpoint = %c.endpoint_id(), "an endpoint change is in the stream but not applied here yet");
    }
    Ok(())
}

/// `POST /api/v1/webhooks`: `{url, events}` → `201` with the signing
/// secret, shown this once.
pub async fn create(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let input: EndpointIn = read_json(req, app.config.max_body_bytes).await?;
    let url = check_url(&input.url)?;
    let events = event_types(&input.events, EVENT_TYPES, "events")?;
    let secret = format!("whsec_{}", random_hex(&app, 24)?);
    let e = Endpoint {
        id: format!("we_{}", random_hex(&app, 8)?),
        url: url.to_string(),
        events,
        secret: secret.clone(),
        created_at: app.clock.now(),
        // Set where the change is applied.
        from_seq: 0,
        partner_id: None,
        disabled: None,
        failures: 0,
    };
    change(
        &app,
        Change::Put {
            endpoint: e.clone(),
        },
    )
    .await?;
    let mut v = endpoint_json(&e);
    v["secret"] = j!(secret);
    Ok(json(StatusCode::CREATED, &v))
}

/// `GET /api/v1/webhooks`: merchants' endpoints (postbacks are the
/// partners').
pub async fn list(app: Arc<App>) -> Result<Response<Body>, ApiError> {
    let a = app.clone();
    let all = blocking(move || a.store.endpoints()).await??;
    let hooks: Vec<Value> = all
        .iter()
        .filter(|e| !e.is_postback())
        .map(endpoint_json)
        .collect();
    Ok(json(StatusCode::OK, &j!({"webhooks": hooks})))
}

async fn webhook(app: &Arc<App>, id: &str) -> Result<Endpoint, ApiError> {
    let a = app.clone();
    let id = id.to_string();
    blocking(move || a.store.endpoint(&id))
        .await??
        .filter(|e| !e.is_postback())
        .ok_or(ApiError::NotFound("webhook"))
}

/// `GET /api/v1/webhooks/{id}`.
pub async fn get(app: Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let e = webhook(&app, id).await?;
    Ok(json(StatusCode::OK, &endpoint_json(&e)))
}

/// `DELETE /api/v1/webhooks/{id}`: nothing more is sent to it.
pub async fn delete(app: Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let e = webhook(&app, id).await?;
    change(&app, Change::Remove { id: e.id }).await?;
    Ok(json(StatusCode::OK, &j!({"deleted": true})))
}

/// `POST /api/v1/webhooks/{id}/enable`: sends again to an endpoint that was
/// disabled after failures; its waiting deliveries go first.
pub async fn enable(app: Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let mut e = webhook(&app, id).await?;
    e.disabled = None;
    e.failures = 0;
    let now = crate::clock::SystemClock.now();
    change(
        &app,
        Change::Resume {
            id: e.id.clone(),
            at: now,
        },
    )
    .await?;
    app.outbox.wake();
    Ok(json(StatusCode::OK, &endpoint_json(&e)))
}

/// `GET /api/v1/webhooks/{id}/deliveries?limit=`: newest first, each with
/// its attempts (time, status or error, latency).
pub async fn deliveries(
    app: Arc<App>,
    req: ApiRequest,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    super::http::only_params(&pairs, &["limit"])?;
    let limit = match pairs.iter().find(|(k, _)| k == "limit") {
        Some((_, v)) => super::http::parse_limit(v)?.min(MAX_LOG),
        None => 100,
    };
    let e = webhook(&app, id).await?;
    let a = app.clone();
    let ds = blocking(move || a.store.deliveries_of(&e.id, limit)).await??;
    let out: Vec<Value> = ds.iter().map(delivery_json).collect();
    Ok(json(
        StatusCode::OK,
        &j!({"webhook_id": id, "deliveries": out}),
    ))
}

/// `POST /api/v1/webhooks/{id}/deliveries/{delivery}/redeliver`: sends one
/// delivery again now, whatever became of it.
pub async fn redeliver(
    app: Arc<App>,
    id: &str,
    delivery: &str,
) -> Result<Response<Body>, ApiError> {
    let e = webhook(&app, id).await?;
    let a = app.clone();
    let did = delivery.to_string();
    let now = crate::clock::SystemClock.now();
    let d = blocking(
        move || -> Result<Option<Delivery>, crate::store::StoreError> {
            let Some(mut d) = a.store.delivery(&did)?.filter(|d| d.endpoint_id == e.id) else {
                return Ok(None);
            };
            let before = d.next_at;
            d.state = State::Pending;
            d.next_at = Some(now);
            a.store.update_delivery(before, &d, None)?;
            Ok(Some(d))
        },
    )
    .await??
    .ok_or(ApiError::NotFound("delivery"))?;
    app.outbox.wake();
    Ok(json(StatusCode::ACCEPTED, &delivery_json(&d)))
}

fn postback_json(e: &Endpoint) -> Value {
    let mut v = j!({"partner_id": e.partner_id, "url_template": e.url, "events": e.events,
                    "created_at": e.created_at, "enabled": e.disabled.is_none(),
                    "failures_in_a_row": e.failures});
    if let Some(d) = &e.disabled {
        v["disabled_reason"] = j!(d.reason);
    }
    v
}

/// `PUT /api/v1/partners/{id}/postback`: `{url_template, events?}`.
pub async fn put_postback(
    app: Arc<App>,
    req: ApiRequest,
    partner: &str,
) -> Result<Response<Body>, ApiError> {
    if app.directory.partner(partner).is_none() {
        return Err(ApiError::NotFound("partner"));
    }
    let input: PostbackIn = read_json(req, app.config.max_body_bytes).await?;
    postback::check(
        input.url_template.trim(),
        app.config.webhooks.allow_private_targets,
    )
    .map_err(|why| ApiError::invalid("url_template", why))?;
    let events = match &input.events {
        None => POSTBACK_DEFAULT.iter().map(|s| s.to_string()).collect(),
        Some(list) => event_types(list, POSTBACK_TYPES, "events")?,
    };
    let a = app.clone();
    let p = partner.to_string();
    let existing = blocking(move || a.store.postback_of(&p)).await??;
    let e = Endpoint {
        id: match &existing {
            Some(e) => e.id.clone(),
            None => format!("we_{}", random_hex(&app, 8)?),
        },
        url: input.url_template.trim().to_string(),
        events,
        secret: String::new(),
        created_at: app.clock.now(),
        // Set where the change is applied (a replaced template keeps its
        // own).
        from_seq: 0,
        partner_id: Some(partner.to_string()),
        disabled: None,
        failures: 0,
    };
    change(
        &app,
        Change::Put {
            endpoint: e.clone(),
        },
    )
    .await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(status, &postback_json(&e)))
}

/// `GET /api/v1/partners/{id}/postback`.
pub async fn get_postback(app: Arc<App>, partner: &str) -> Result<Response<Body>, ApiError> {
    let a = app.clone();
    let p = partner.to_string();
    let e = blocking(move || a.store.postback_of(&p))
        .await??
        .ok_or(ApiError::NotFound("postback"))?;
    Ok(json(StatusCode::OK, &postback_json(&e)))
}

/// `DELETE /api/v1/partners/{id}/postback`.
pub async fn delete_postback(app: Arc<App>, partner: &str) -> Result<Response<Body>, ApiError> {
    let a = app.clone();
    let p = partner.to_string();
    let e = blocking(move || a.store.postback_of(&p))
        .await??
        .ok_or(ApiError::NotFound("postback"))?;
    change(&app, Change::Remove { id: e.id }).await?;
    Ok(json(StatusCode::OK, &j!({"deleted": true})))
}
