//! The admin API under `/api/v1`: partners, links, clicks, signing keys.
//! Every call is authenticated by the caller of these handlers.

use super::http::ApiRequest;
use super::http::{
    blocking, json, parse_cursor, parse_json, parse_limit, parse_time_ms, query_pairs, read_json,
    ApiError, Body,
};
use super::App;
use crate::directory::{is_valid_code, NewLink, NewPartner};
use crate::id::random_bytes;
use crate::model::{ClickRecord, Link};
use crate::secrets::{encode_keyring, write_private, KeyringSource};
use crate::store::ClickQuery;
use chrono::{DateTime, Utc};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Longest an admin read waits for queued clicks to reach disk.
const BARRIER_WAIT: Duration = Duration::from_secs(2);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PartnerIn {
    program: String,
    name: String,
    email: String,
    website: String,
    #[serde(default)]
    currency: Option<String>,
    /// The partner's own customer accounts at the merchant.
    #[serde(default)]
    customer_ids: Vec<String>,
    /// The partner's known addresses; only their keyed hashes are kept.
    #[serde(default)]
    ips: Vec<String>,
}

/// `POST /api/v1/partners`
pub async fn create_partner(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let input: PartnerIn = read_json(req, app.config.max_body_bytes).await?;
    let mut ip_hashes = Vec::new();
    for (i, raw) in input.ips.iter().enumerate() {
        let ip: std::net::IpAddr = raw.trim().parse().map_err(|_| {
            ApiError::invalid(format!("ips[{i}]"), format!("{raw:?} is not an IP address"))
        })?;
        ip_hashes.push(crate::net::ip_hash(&app.ip_key, ip));
    }
    if input.customer_ids.iter().any(|c| c.trim().is_empty()) {
        return Err(ApiError::invalid("customer_ids", "must not hold empty ids"));
    }
    let now = app.clock.now();
    let partner = app
        .create_partner(
            NewPartner {
                program: input.program,
                name: input.name,
                email: input.email,
                website: input.website,
                currency: input.currency,
                customer_ids: input.customer_ids,
                ip_hashes,
            },
            now,
        )
        .await?;
    // The calculator learns of the partner through the event log.
    let event = super::partner_event(&partner);
    app.append(vec![event], app.clock.now()).await?;
    let mut resp = json(StatusCode::CREATED, &partner);
    if let Ok(v) = HeaderValue::try_from(format!("/api/v1/partners/{}", partner.id)) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// `GET /api/v1/partners/{id}`
pub fn get_partner(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    let p = app
        .directory
        .partner(id)
        .ok_or(ApiError::NotFound("partner"))?;
    Ok(json(StatusCode::OK, &p))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkIn {
    partner_id: String,
    destination: String,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Serialize)]
pub(super) struct LinkOut<'a> {
    code: &'a str,
    url: String,
    destination: &'a str,
    partner_id: &'a str,
    program: &'a str,
    status: &'static str,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<DateTime<Utc>>,
    click_count: u64,
}

pub(super) fn link_out<'a>(app: &App, l: &'a Link, click_count: u64) -> LinkOut<'a> {
    LinkOut {
        code: &l.code,
        url: format!("{}/r/{}", app.public_url, l.code),
        destination: &l.destination,
        partner_id: &l.partner_id,
        program: &l.program,
        status: if l.disabled_at.is_some() {
            "disabled"
        } else {
            "active"
        },
        created_at: l.created_at,
        disabled_at: l.disabled_at,
        click_count,
    }
}

/// `POST /api/v1/links`; with a partner key (`owner`), only a link of the
/// partner's own, in a program with `partner_links = true`.
pub async fn create_link(
    app: Arc<App>,
    req: ApiRequest,
    owner: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let input: LinkIn = read_json(req, app.config.max_body_bytes).await?;
    if let Some(owner) = owner {
        if input.partner_id != owner {
            return Err(ApiError::NotFound("partner"));
        }
        let program = app
            .directory
            .partner(owner)
            .and_then(|p| app.config.programs.get(&p.program).cloned())
            .ok_or(ApiError::NotFound("partner"))?;
        if !program.partner_links {
            return Err(ApiError::Forbidden(format!(
                "a partner key may not create links in program {} (its partner_links setting is off)",
                program.key
            )));
        }
    }
    let now = app.clock.now();
    let link = app
        .create_link(
            NewLink {
                partner_id: input.partner_id,
                destination: input.destination,
                code: input.code,
            },
            now,
        )
        .await?;
    let mut resp = json(StatusCode::CREATED, &link_out(&app, &link, 0));
    if let Ok(v) = HeaderValue::try_from(format!("/api/v1/links/{}", link.code)) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// `GET /api/v1/links/{code}`: the link and how many clicks it has on disk,
/// counting every click served before this request.
pub async fn get_link(app: Arc<App>, code: &str) -> Result<Response<Body>, ApiError> {
    if !is_valid_code(code) {
        return Err(ApiError::NotFound("link"));
    }
    let a = app.clone();
    let c = code.to_string();
    let link = blocking(move || a.directory.link(&c))
        .await??
        .ok_or(ApiError::NotFound("link"))?;
    let _ = tokio::time::timeout(BARRIER_WAIT, app.clicklog.barrier()).await;
    let count = app.link_clicks(&link.code);
    Ok(json(StatusCode::OK, &link_out(&app, &link, count)))
}

/// `DELETE /api/v1/links/{code}`: disables the link (it answers 410).
pub async fn disable_link(app: Arc<App>, code: String) -> Result<Response<Body>, ApiError> {
    if !is_valid_code(&code) {
        return Err(ApiError::NotFound("link"));
    }
    let link = app.disable_link(code, app.clock.now()).await?;
    let count = app.link_clicks(&link.code);
    Ok(json(StatusCode::OK, &link_out(&app, &link, count)))
}

#[derive(Serialize)]
struct ClickPageOut {
    clicks: Vec<ClickRecord>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/clicks/{id}`: one click. In cluster mode a calculator
/// also knows every other edge's shipped clicks, and an edge asks the
/// active calculator for a click it did not serve.
pub async fn get_click(app: Arc<App>, raw: &str) -> Result<Response<Body>, ApiError> {
    let id: crate::id::ClickId = raw.parse().map_err(|_| ApiError::NotFound("click"))?;
    match app.find_click(id).await? {
        Some(c) => Ok(json(StatusCode::OK, &c)),
        None => Err(ApiError::NotFound("click")),
    }
}

/// `GET /api/v1/clicks?link=&partner=&from=&to=&limit=&cursor=`: oldest
/// first; pass `next_cursor` back as `cursor` for the next page.
pub async fn list_clicks(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let mut q = ClickQuery {
        limit: 100,
        ..ClickQuery::default()
    };
    for (k, v) in query_pairs(&req) {
        match k.as_str() {
            "link" => q.link = Some(v),
            "partner" => q.partner = Some(v),
            "from" => q.from_ms = Some(parse_time_ms("from", &v)?),
            "to" => q.to_ms = Some(parse_time_ms("to", &v)?),
            "limit" => q.limit = parse_limit(&v)?,
            "cursor" => q.after = Some(parse_cursor(&v)?),
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown parameter; use link, partner, from, to, limit or cursor",
                ))
            }
        }
    }
    if let Some(code) = &q.link {
        // Scan through the link's partner (the store indexes by partner).
        let owner = app
            .directory
            .live_link(code)
            .map(|l| l.partner.id.to_string());
        match (owner, &q.partner) {
            (Some(owner), Some(p)) if &owner == p => {}
            (Some(owner), None) => q.partner = Some(owner),
            _ => {
                let empty = ClickPageOut {
                    clicks: vec![],
                    next_cursor: None,
                };
                return Ok(json(StatusCode::OK, &empty));
            }
        }
    }
    let _ = tokio::time::timeout(BARRIER_WAIT, app.clicklog.barrier()).await;
    let store = super::fraud_api::Clicks::of(&app);
    let page = blocking(move || store.page(&q)).await??;
    Ok(json(
        StatusCode::OK,
        &ClickPageOut {
            clicks: page.clicks,
            next_cursor: page.next.map(|id| id.to_string()),
        },
    ))
}

#[derive(Serialize)]
struct KeyOut {
    id: u32,
    created_at: Option<DateTime<Utc>>,
    retired: bool,
    signing: bool,
}

/// `GET /api/v1/keys`: key ids and state, never secrets.
pub fn list_keys(app: &App) -> Response<Body> {
    let ring = app.keyring.read().expect("keyring lock");
    let signing = ring.signing_key().id;
    let keys: Vec<KeyOut> = ring
        .keys()
        .iter()
        .map(|k| KeyOut {
            id: k.id,
            created_at: (k.created_at > 0)
                .then(|| crate::clock::ms_to_datetime(k.created_at * 1000)),
            retired: k.retired,
            signing: k.id == signing,
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "keys": keys }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `POST /api/v1/keys/rotate` and `POST /api/v1/keys/{id}/retire`: change
/// the keyring and save it before answering.
pub async fn change_keys(
    app: Arc<App>,
    req: ApiRequest,
    retire: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let KeyringSource::File(path) = &app.keyring_source else {
        return Err(ApiError::Conflict(
            "signing keys are set in configuration; change them there".into(),
        ));
    };
    let retire = match retire {
        None => None,
        Some(id) => Some(
            id.parse::<u32>()
                .map_err(|_| ApiError::invalid("id", "must be a key id number"))?,
        ),
    };
    // An empty body or `{}` is fine; anything else is a mistake worth naming.
    let body = super::http::read_body(req, 1024).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        parse_json::<Empty>(&body)?;
    }
    if let Some(cluster) = &app.cluster {
        return change_shared_keys(&app, cluster, retire).await;
    }
    let _serialised = app.keyring_write.lock().await;
    let (status, id, bytes) = {
        let mut ring = app.keyring.write().expect("keyring lock");
        let (status, id) = match retire {
            None => {
                let secret = random_bytes::<32>(&app.rng).to_vec();
                (
                    StatusCode::CREATED,
                    ring.rotate(secret, app.clock.now_ms() / 1000),
                )
            }
            Some(id) => {
                ring.retire(id).map_err(|e| match e {
                    crate::token::KeyringError::NoSuchKey(_) => ApiError::NotFound("key"),
                    other => ApiError::Conflict(other.to_string()),
                })?;
                (StatusCode::OK, id)
            }
        };
        (status, id, encode_keyring(&ring))
    };
    let path = path.clone();
    blocking(move || write_private(&path, &bytes))
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(key_id = id, retired = retire.is_some(), "keyring changed");
    Ok(json(
        status,
        &serde_json::json!({ "id": id, "retired": retire.is_some() }),
    ))
}

/// A rotation or retirement of the cluster's shared keyring: a
/// compare-and-set on the bucket, then used here at once (the other nodes
/// follow from their watch).
async fn change_shared_keys(
    app: &Arc<App>,
    cluster: &crate::cluster::Cluster,
    retire: Option<u32>,
) -> Result<Response<Body>, ApiError> {
    let secret = random_bytes::<32>(&app.rng).to_vec();
    let now_s = app.clock.now_ms() / 1000;
    let id = std::sync::atomic::AtomicU32::new(0);
    let bytes = cluster
        .change_keyring(|current| {
            let mut ring = crate::secrets::decode_keyring(current)
                .map_err(|e| ApiError::Internal(format!("the shared keyring: {e}")))?;
            let changed = match retire {
                None => ring.rotate(secret.clone(), now_s),
                Some(k) => {
                    ring.retire(k).map_err(|e| match e {
                        crate::token::KeyringError::NoSuchKey(_) => ApiError::NotFound("key"),
                        other => ApiError::Conflict(other.to_string()),
                    })?;
                    k
                }
            };
            id.store(changed, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, ApiError>(encode_keyring(&ring))
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("the cluster's keyring: {e}")))??;
    super::cluster_tasks::adopt_keyring(app, bytes).await;
    let id = id.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        key_id = id,
        retired = retire.is_some(),
        "shared keyring changed"
    );
    Ok(json(
        if retire.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &serde_json::json!({ "id": id, "retired": retire.is_some() }),
    ))
}

/// Longest reason for a standing change (it goes to the audit log).
const MAX_REASON_CHARS: usize = 500;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StandingIn {
    status: crate::model::PartnerStatus,
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

/// `PATCH /api/v1/partners/{id}`: `{status, reason, actor?}`. Suspended:
/// clicks still redirect but earn nothing and payouts are held. Terminated:
/// per the program, the balance is forfeited or what was earned until now
/// is still paid. Every change goes to the partner's audit log.
pub async fn patch_partner(
    app: Arc<App>,
    req: ApiRequest,
    id: String,
) -> Result<Response<Body>, ApiError> {
    let input: StandingIn = read_json(req, app.config.max_body_bytes).await?;
    if input.reason.trim().is_empty() {
        return Err(ApiError::invalid(
            "reason",
            "say why: it goes to the audit log",
        ));
    }
    if input.reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid(
            "reason",
            format!("is longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if input
        .actor
        .as_ref()
        .is_some_and(|a| a.trim().is_empty() || a.chars().count() > 200)
    {
        return Err(ApiError::invalid("actor", "must be 1 to 200 characters"));
    }
    let status = input.status;
    let partner = app.set_status(id.clone(), status).await?;
    let label = status.label();
    let change = crate::commission::event::PartnerStatusChange {
        partner_id: id.clone(),
        status: label.into(),
        occurred_at: app.clock.now(),
        actor: input.actor.unwrap_or_else(|| "admin".into()),
        reason: input.reason,
    };
    let event = crate::commission::Event::PartnerStatus(change.clone());
    let item = crate::store::events::NewEvent {
        id: crate::conversions::internal_id(&event),
        digest: crate::conversions::digest(&serde_json::to_value(&change).expect("serialises")),
        event,
    };
    let out = app.append(vec![item], app.clock.now()).await?;
    if let (true, crate::store::events::Appended::Accepted(seq))
    | (true, crate::store::events::Appended::Duplicate(seq)) = (app.calculates(), out[0])
    {
        app.conversions
            .wait_for(seq, std::time::Duration::from_secs(10))
            .await;
    }
    let history = app.conversions.read(|c| c.history(&id).to_vec());
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"partner": partner, "audit": history}),
    ))
}

/// `GET /api/v1/partners/{id}/audit`: every standing change, with who and why.
pub fn partner_audit(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    app.directory
        .partner(id)
        .ok_or(ApiError::NotFound("partner"))?;
    let history = app.conversions.read(|c| c.history(id).to_vec());
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"partner_id": id, "audit": history}),
    ))
}
