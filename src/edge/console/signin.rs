//! Signing in and out: with an API key (or the admin token) on
//! `/console/signin`, or with a partner's one-time link on
//! `/portal/signin/{secret}` (a page with a button: opening the link does
//! not use it up, so mail scanners that fetch links spend nothing).

use super::{page, render, see_other, Ctx, SESSION_COOKIE};
use crate::access::{sessions::partner_principal, Principal, Role};
use crate::edge::http::{blocking, ApiError, Body};
use askama::Template;
use hyper::header::{HeaderValue, SET_COOKIE};
use hyper::{Method, Response, StatusCode};

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage<'a> {
    error: Option<&'a str>,
    action: &'a str,
}

#[derive(Template)]
#[template(path = "signin_link.html")]
struct LinkPage<'a> {
    secret: &'a str,
    valid: bool,
}

/// `/console/signin`, `/console/signout`.
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::GET, ["signin"]) => render(&SigninPage {
            error: None,
            action: "/console/signin",
        }),
        (&Method::POST, ["signin"]) => with_key(ctx, "/console/signin").await,
        (&Method::POST, ["signout"]) => sign_out(ctx).await,
        _ => Err(ApiError::NotFound("page")),
    }
}

/// `/portal/signin`, `/portal/signin/{secret}`.
pub(super) async fn portal(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::GET, ["signin"]) => render(&SigninPage {
            error: None,
            action: "/portal/signin",
        }),
        (&Method::POST, ["signin"]) => with_key(ctx, "/portal/signin").await,
        (&Method::GET, ["signin", secret]) => {
            let a = ctx.app.clone();
            let now = ctx.app.clock.now();
            let s = secret.to_string();
            let valid = blocking(move || a.sessions.peek_signin_link(&s, now))
                .await??
                .is_some();
            let html = LinkPage { secret, valid }
                .render()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(page(
                if valid {
                    StatusCode::OK
                } else {
                    StatusCode::GONE
                },
                html,
            ))
        }
        (&Method::POST, ["signin", secret]) => {
            if let Some(resp) = limited(ctx, "/portal/signin")? {
                return Ok(resp);
            }
            let a = ctx.app.clone();
            let now = ctx.app.clock.now();
            let s = secret.to_string();
            let used = blocking(move || a.sessions.use_signin_link(&s, now)).await??;
            match used.filter(|l| ctx.app.directory.partner(&l.partner_id).is_some()) {
                Some(l) => {
                    start(
                        ctx,
                        &partner_principal(&l.partner_id),
                        "sign-in link".into(),
                    )
                    .await
                }
                None => {
                    let html = LinkPage {
                        secret,
                        valid: false,
                    }
                    .render()
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                    Ok(page(StatusCode::GONE, html))
                }
            }
        }
        (&Method::POST, ["signout"]) => sign_out(ctx).await,
        _ => Err(ApiError::NotFound("page")),
    }
}

/// Too many attempts from this address: the sign-in page with a 429.
fn limited(ctx: &Ctx, action: &str) -> Result<Option<Response<Body>>, ApiError> {
    let ip = super::super::client_ip::visitor_ip(
        ctx.peer.ip(),
        &ctx.headers,
        &ctx.app.config.trusted_proxies,
    );
    if ctx.app.signin_limiter.check_key(&ip).is_ok() {
        return Ok(None);
    }
    let html = SigninPage {
        error: Some("Too many sign-in attempts from your address; wait a minute and try again."),
        action,
    }
    .render()
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = page(StatusCode::TOO_MANY_REQUESTS, html);
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("60"));
    Ok(Some(resp))
}

async fn with_key(ctx: &mut Ctx, action: &str) -> Result<Response<Body>, ApiError> {
    if let Some(resp) = limited(ctx, action)? {
        return Ok(resp);
    }
    let key = ctx.field("key").to_string();
    let app = &ctx.app;
    let found: Option<(Principal, String)> = if app.admin.check(&key) {
        Some((Principal::admin_token(), "admin token".into()))
    } else {
        app.keys.authenticate(&key, app.clock.now()).map(|p| {
            let name = p
                .key_id
                .as_ref()
                .and_then(|k| app.keys.get(k))
                .map_or_else(|| "API key".into(), |k| k.name);
            (p, name)
        })
    };
    match found {
        Some((p, _)) if p.role == Role::Ingest => {
            let html = SigninPage {
                error: Some("An ingest key only sends events; it cannot sign in."),
                action,
            }
            .render()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(page(StatusCode::FORBIDDEN, html))
        }
        Some((p, who)) => start(ctx, &p, who).await,
        None => {
            let html = SigninPage {
                error: Some("That key is not valid (or was revoked, or has expired)."),
                action,
            }
            .render()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(page(StatusCode::UNAUTHORIZED, html))
        }
    }
}

/// Opens a session and sends the person to their home page.
async fn start(ctx: &Ctx, p: &Principal, who: String) -> Result<Response<Body>, ApiError> {
    let a = ctx.app.clone();
    let now = ctx.app.clock.now();
    let principal = p.clone();
    let (id, _) = blocking(move || a.sessions.start(&principal, who, now)).await??;
    let home = if p.role == Role::Partner {
        "/portal/"
    } else {
        "/console/"
    };
    let mut resp = see_other(home);
    set_cookie(&mut resp, &ctx.app, &id, None);
    Ok(resp)
}

async fn sign_out(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    if let Some((id, _)) = &ctx.session {
        let a = ctx.app.clone();
        let id = id.clone();
        blocking(move || a.sessions.end(&id)).await??;
    }
    let mut resp = see_other("/console/signin");
    set_cookie(&mut resp, &ctx.app, "", Some(0));
    Ok(resp)
}

fn set_cookie(
    resp: &mut Response<Body>,
    app: &crate::edge::App,
    value: &str,
    max_age: Option<u64>,
) {
    let mut c = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if app.config.console.secure_cookies {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if let Ok(v) = HeaderValue::try_from(c) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}
