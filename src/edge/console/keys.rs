//! The console's API key page (admin): create a key with a role (its
//! secret shown this once), list, revoke.

use super::{page, render, see_other, Chrome, Ctx};
use crate::edge::http::{ApiError, Body};
use askama::Template;
use chrono::{DateTime, Utc};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Key {
    id: String,
    name: String,
    role: String,
    partner_id: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    secret: Option<String>,
}

#[derive(Deserialize)]
struct Keys {
    keys: Vec<Key>,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct Page {
    chrome: Chrome,
    keys: Vec<Key>,
    created: Option<Key>,
}

/// `/console/api-keys...`
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::GET, []) => show(ctx, None).await,
        (&Method::POST, []) => {
            let mut body = json!({"name": ctx.field("name"), "role": ctx.field("role")});
            if !ctx.field("partner_id").is_empty() {
                body["partner_id"] = json!(ctx.field("partner_id"));
            }
            if !ctx.field("expires_on").is_empty() {
                let day = chrono::NaiveDate::parse_from_str(ctx.field("expires_on"), "%Y-%m-%d")
                    .map_err(|_| ApiError::invalid("expires_on", "must be a date (YYYY-MM-DD)"))?;
                body["expires_at"] = json!(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
            }
            let k: Key = ctx.api(Method::POST, "api-keys", Some(body)).await?;
            show(ctx, Some(k)).await
        }
        (&Method::POST, [id, "revoke"]) => {
            let _: serde_json::Value = ctx
                .api(Method::DELETE, &format!("api-keys/{id}"), None)
                .await?;
            Ok(see_other("/console/api-keys?done=revoked"))
        }
        _ => Err(ApiError::NotFound("page")),
    }
}

async fn show(ctx: &Ctx, created: Option<Key>) -> Result<Response<Body>, ApiError> {
    let list: Keys = ctx.api(Method::GET, "api-keys", None).await?;
    let p = Page {
        chrome: Chrome::of(ctx),
        keys: list.keys,
        created,
    };
    if p.created.is_some() {
        let html = p.render().map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(page(StatusCode::CREATED, html));
    }
    render(&p)
}
