//! `/api/v1/api-keys` (admin only): create a key with a role (its secret
//! shown once), list them (never a secret), revoke one at once.

use super::http::ApiRequest;
use super::http::{json, read_json, ApiError, Body};
use super::App;
use crate::access::{ApiKey, Role};
use crate::cluster::directory::Change;
use chrono::{DateTime, Utc};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyIn {
    name: String,
    role: Role,
    #[serde(default)]
    partner_id: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// A key as the API shows it.
#[derive(Serialize)]
struct KeyOut<'a> {
    id: &'a str,
    name: &'a str,
    role: Role,
    partner_id: Option<&'a str>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

fn out<'a>(k: &'a ApiKey, secret: Option<&'a str>) -> KeyOut<'a> {
    KeyOut {
        id: &k.id,
        name: &k.name,
        role: k.role,
        partner_id: k.partner_id.as_deref(),
        created_at: k.created_at,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        secret,
    }
}

/// `POST /api/v1/api-keys`: `{name, role, partner_id?, expires_at?}` →
/// `201` with the secret, shown this once.
pub async fn create(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let input: KeyIn = read_json(req, app.config.max_body_bytes).await?;
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    match (input.role, &input.partner_id) {
        (Role::Partner, None) => {
            return Err(ApiError::invalid(
                "partner_id",
                "a partner key is bound to one partner: give its id",
            ))
        }
        (Role::Partner, Some(pid)) if app.directory.partner(pid).is_none() => {
            return Err(ApiError::invalid(
                "partner_id",
                format!("no partner with id {pid:?}"),
            ))
        }
        (Role::Partner, Some(_)) => {}
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "partner_id",
                "only a partner key is bound to a partner",
            ))
        }
        (_, None) => {}
    }
    let now = app.clock.now();
    if input.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::invalid("expires_at", "must be in the future"));
    }
    let (key, secret) = ApiKey::new(
        name,
        input.role,
        input.partner_id,
        input.expires_at,
        now,
        &app.rng,
    );
    if let Some(cluster) = &app.cluster {
        cluster
            .create_api_key(&key)
            .await
            .map_err(|e| ApiError::Unavailable(format!("the cluster's directory: {e}")))?;
    }
    app.apply_now(Change::ApiKey(key.clone())).await?;
    tracing::info!(key_id = %key.id, role = ?key.role, "API key created");
    let mut resp = json(StatusCode::CREATED, &out(&key, Some(&secret)));
    if let Ok(v) = HeaderValue::try_from(format!("/api/v1/api-keys/{}", key.id)) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// `GET /api/v1/api-keys`: every key, newest first, without secrets.
pub fn list(app: &App) -> Response<Body> {
    let keys = app.keys.list();
    let items: Vec<KeyOut> = keys.iter().map(|k| out(k, None)).collect();
    json(StatusCode::OK, &serde_json::json!({ "keys": items }))
}

/// `DELETE /api/v1/api-keys/{id}`: revoked at once (on every node of a
/// cluster as soon as its watch applies it).
pub async fn revoke(app: Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let now = app.clock.now();
    let key = match &app.cluster {
        Some(cluster) => cluster.revoke_api_key(id, now).await?,
        None => {
            let mut k = app.keys.get(id).ok_or(ApiError::NotFound("api key"))?;
            if k.revoked_at.is_none() {
                k.revoked_at = Some(now);
            }
            k
        }
    };
    app.apply_now(Change::ApiKey(key.clone())).await?;
    tracing::info!(key_id = %key.id, "API key revoked");
    Ok(json(StatusCode::OK, &out(&key, None)))
}
