//! The staff console (`/console/`) and the partner portal (`/portal/`):
//! server-rendered pages (askama templates from `templates/`, compiled
//! in) that call the API in-process as the signed-in principal, so every
//! page follows exactly the API's rules for that role.
//!
//! What every page shares lives here: sessions from the cookie, CSRF
//! tokens and same-origin checks on every form, the security headers,
//! form bodies, and error pages. One file per page below.

mod chart;
mod fraud;
mod keys;
mod links;
mod partners;
mod payouts;
mod portal;
pub mod qr;
mod reviews;
mod signin;
mod views;

use super::http::{self, ApiBody, ApiError, Body};
use super::App;
use crate::access::sessions::Session;
use crate::access::Role;
use askama::Template;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, COOKIE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;

/// The session cookie.
pub const SESSION_COOKIE: &str = "refedge_session";

/// Largest form body (a CSV of links).
const MAX_FORM_BYTES: usize = 1 << 20;

/// The stylesheet and the one script (copy buttons), served from the
/// binary; nothing is loaded from anywhere else.
const CSS: &str = include_str!("../../../assets/console.css");
const JS: &str = include_str!("../../../assets/console.js");

/// Headers on every page: no inline script, no framing, no sniffing, no
/// caching, and no referrer to other sites (a sign-in link's secret is in
/// its URL). `no-referrer` would also make browsers send `Origin: null`
/// on our own forms, which the same-origin check must refuse.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// Sign-in attempts limited per client address.
pub type SigninLimiter = governor::RateLimiter<
    std::net::IpAddr,
    governor::state::keyed::DashMapStateStore<std::net::IpAddr>,
    crate::fraud::AppClock,
    governor::middleware::NoOpMiddleware<std::time::Duration>,
>;

/// A new limiter of `per_minute` sign-in attempts per address.
pub fn signin_limiter(per_minute: u32, clock: crate::clock::SharedClock) -> SigninLimiter {
    let n = std::num::NonZeroU32::new(per_minute.max(1)).expect("non-zero");
    let quota = governor::Quota::with_period(std::time::Duration::from_secs(60) / n.get())
        .expect("positive period")
        .allow_burst(n);
    governor::RateLimiter::new(
        quota,
        governor::state::keyed::DashMapStateStore::default(),
        crate::fraud::AppClock(clock),
    )
}

/// One request to a page: who is asking, what they sent.
pub(crate) struct Ctx {
    pub app: Arc<App>,
    pub peer: SocketAddr,
    pub method: Method,
    /// Path segments after `/console/` or `/portal/`.
    pub rest: Vec<String>,
    pub query: Vec<(String, String)>,
    /// The signed-in session and its id, if any.
    pub session: Option<(String, Session)>,
    /// A POST's form fields (after the CSRF check).
    pub form: Vec<(String, String)>,
    pub headers: hyper::HeaderMap,
}

impl Ctx {
    /// A query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A form field, trimmed ("" when absent).
    pub fn field(&self, key: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.trim())
    }

    /// The session (callers are behind [`require`]).
    pub fn s(&self) -> &Session {
        &self.session.as_ref().expect("signed in").1
    }

    /// Calls the API as the signed-in principal; the answer's JSON.
    pub async fn api<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ApiError> {
        let body = self.api_raw(method, path, body).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Internal(format!("API answer: {e}")))
    }

    /// [`Ctx::api`], the answer's bytes as they are (CSV).
    pub async fn api_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, ApiError> {
        let p = self.s().principal();
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(format!("/api/v1/{path}"))
            .header(CONTENT_TYPE, "application/json")
            .body(ApiBody::Right(Full::new(bytes)))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let route = path.split('?').next().unwrap_or_default();
        let rest: Vec<&str> = route.split('/').collect();
        let resp = super::routes::api_as(&self.app, &p, req, &rest).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(ApiError::Internal(format!("API answered {status}")));
        }
        Ok(body)
    }

    /// [`Ctx::api`] for a section a role may not see: `None` on 403/404.
    pub async fn api_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ApiError> {
        match self.api(Method::GET, path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(ApiError::Forbidden(_) | ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What every page's layout needs.
pub(crate) struct Chrome {
    /// `console` or `portal`.
    pub area: &'static str,
    pub who: String,
    pub role: &'static str,
    pub csrf: String,
    /// The console's menu: what this role may open.
    pub menu: Vec<(&'static str, &'static str)>,
    pub flash: Option<String>,
    pub error: Option<String>,
}

impl Chrome {
    pub fn of(ctx: &Ctx) -> Self {
        let s = ctx.s();
        let area = if s.role == Role::Partner {
            "portal"
        } else {
            "console"
        };
        let mut menu = vec![("/console/", "Overview")];
        if matches!(
            s.role,
            Role::Admin | Role::Marketing | Role::Fraud | Role::Finance
        ) {
            menu.push(("/console/partners", "Partners"));
            menu.push(("/console/links", "Links"));
        }
        if matches!(s.role, Role::Admin | Role::Fraud) {
            menu.push(("/console/fraud", "Fraud"));
        }
        if matches!(s.role, Role::Admin | Role::Fraud | Role::Finance) {
            menu.push(("/console/reviews", "Reviews"));
        }
        if matches!(s.role, Role::Admin | Role::Finance) {
            menu.push(("/console/payouts", "Payouts"));
        }
        if s.role == Role::Admin {
            menu.push(("/console/api-keys", "API keys"));
        }
        if area == "portal" {
            menu = vec![("/portal/", "My earnings")];
        }
        Self {
            area,
            who: s.who.clone(),
            role: s.role.label(),
            csrf: s.csrf.clone(),
            menu,
            flash: ctx.q("done").map(flash_text).map(str::to_string),
            error: None,
        }
    }

    /// Whether the role is `role` or admin (for showing a form; the API
    /// decides what the form may do).
    pub fn can(&self, role: &str) -> bool {
        self.role == "admin" || self.role == role
    }
}

/// Confirmation messages, by the `done` parameter of a redirect after a
/// form (never text from the URL itself).
fn flash_text(key: &str) -> &'static str {
    match key {
        "partner" => "Partner created.",
        "link" => "Link created.",
        "disabled" => "Link disabled.",
        "status" => "Standing changed.",
        "confirmed" => "Payout batch confirmed as paid.",
        "run" => "Payout batch created.",
        "revoked" => "Key revoked.",
        "approved" => "Approved: the held commissions follow the program's schedule.",
        "rejected" => "Rejected: the held commissions are voided.",
        _ => "Done.",
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
    signed_in: bool,
}

/// An HTML page with the security headers.
pub(crate) fn page(status: StatusCode, html: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(&mut r);
    r
}

fn secure(r: &mut Response<Body>) {
    for (k, v) in SECURITY_HEADERS {
        r.headers_mut().insert(k, HeaderValue::from_static(v));
    }
}

/// Renders a template as a 200 page.
pub(crate) fn render(t: &impl Template) -> Result<Response<Body>, ApiError> {
    let html = t
        .render()
        .map_err(|e| ApiError::Internal(format!("template: {e}")))?;
    Ok(page(StatusCode::OK, html))
}

/// `303 See Other` to a page of ours (after a form).
pub(crate) fn see_other(to: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::try_from(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    secure(&mut r);
    r
}

/// A download (CSV, SVG, PNG) with the security headers.
pub(crate) fn download(
    content_type: &'static str,
    filename: &str,
    body: Vec<u8>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::try_from(format!("attachment; filename=\"{filename}\"")) {
        r.headers_mut().insert("content-disposition", v);
    }
    secure(&mut r);
    r
}

/// An error as a page: a client's mistake names the field and reason.
fn error_page(e: &ApiError, signed_in: bool) -> Response<Body> {
    let status = e.status();
    let (title, message) = match e {
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "console page failed");
            (
                "Something went wrong",
                "The server could not show this page.".to_string(),
            )
        }
        ApiError::Invalid { field, reason } => {
            ("Please check the form", format!("{field}: {reason}"))
        }
        ApiError::NotFound(what) => ("Not found", format!("No such {what}.")),
        ApiError::Forbidden(m) => ("Not allowed", m.clone()),
        other => ("Could not do that", other.to_string()),
    };
    let html = ErrorPage {
        status: status.as_u16(),
        title,
        message: &message,
        signed_in,
    }
    .render()
    .unwrap_or_else(|_| "error".into());
    page(status, html)
}

/// Where the console and portal start: `/console/...` and `/portal/...`.
pub(super) async fn route(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
    portal: bool,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let rest: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match rest.first().map(String::as_str) {
        Some("app.css") => return asset("text/css; charset=utf-8", CSS),
        Some("app.js") => return asset("text/javascript; charset=utf-8", JS),
        _ => {}
    }
    if !app.calculates() {
        return to_calculator(&app, &req);
    }
    let mut ctx = match context(app, peer, req, rest).await {
        Ok(c) => c,
        Err(e) => return error_page(&e, false),
    };
    let signed_in = ctx.session.is_some();
    let result = if portal {
        portal::handle(&mut ctx).await
    } else {
        dispatch(&mut ctx).await
    };
    result.unwrap_or_else(|e| error_page(&e, signed_in))
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("max-age=300"));
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Cluster edges keep no ledger: pages are served by the active
/// calculator (sessions are that node's).
fn to_calculator(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let holder = app.cluster.as_ref().and_then(|c| c.lease.holder());
    match holder {
        Some(h) => {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let mut r = see_other(&format!("{}{path}", h.api_url.trim_end_matches('/')));
            *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            r
        }
        None => error_page(
            &ApiError::Unavailable("no calculator holds the lease at the moment".into()),
            false,
        ),
    }
}

/// Reads the session, and a POST's form after checking it came from one
/// of our own pages: same origin, and the session's CSRF token (the
/// sign-in forms, before a session exists, check the origin only).
async fn context(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
    rest: Vec<String>,
) -> Result<Ctx, ApiError> {
    let method = req.method().clone();
    let query = url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let headers = req.headers().clone();
    let session = match session_cookie(&headers) {
        Some(id) => {
            let a = app.clone();
            let now = app.clock.now();
            let sid = id.clone();
            http::blocking(move || a.sessions.resume(&sid, &a.keys, now))
                .await??
                .map(|s| (id, s))
        }
        None => None,
    };
    let mut ctx = Ctx {
        app,
        peer,
        method,
        rest,
        query,
        session,
        form: Vec::new(),
        headers,
    };
    if ctx.method == Method::POST {
        if !same_origin(&ctx.headers) {
            return Err(ApiError::Forbidden(
                "this form was sent from another site".into(),
            ));
        }
        let raw = Limited::new(req.into_body(), MAX_FORM_BYTES)
            .collect()
            .await
            .map_err(|_| ApiError::TooLarge(MAX_FORM_BYTES))?
            .to_bytes();
        let header = ctx
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // (Lower case to compare; a multipart boundary keeps its case.)
        let ct = header.to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            ctx.form = url::form_urlencoded::parse(&raw).into_owned().collect();
        } else if ct.starts_with("multipart/form-data") {
            ctx.form = multipart_fields(&header, raw).await?;
        } else {
            return Err(ApiError::UnsupportedMediaType(ct));
        }
        let signing_in = ctx.rest.first().is_some_and(|s| s == "signin");
        if !signing_in {
            let token = ctx.field("csrf").to_string();
            let ok = ctx
                .session
                .as_ref()
                .is_some_and(|(_, s)| crate::access::same(s.csrf.as_bytes(), token.as_bytes()));
            if !ok {
                return Err(ApiError::Forbidden(
                    "this form has expired or did not come from this site; reload the page and try again".into(),
                ));
            }
        }
    }
    Ok(ctx)
}

/// The fields of a `multipart/form-data` body, a file's content as its
/// value (UTF-8).
async fn multipart_fields(
    content_type: &str,
    body: Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::invalid("content-type", e.to_string()))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut m = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    while let Some(field) = m
        .next_field()
        .await
        .map_err(|e| ApiError::invalid("form", e.to_string()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let text = field
            .text()
            .await
            .map_err(|e| ApiError::invalid(name.clone(), e.to_string()))?;
        out.push((name, text));
    }
    Ok(out)
}

fn session_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A form POST from one of our pages: `Sec-Fetch-Site` (when the browser
/// sends it) is same-origin, and `Origin` (when sent) is this host.
fn same_origin(headers: &hyper::HeaderMap) -> bool {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => url::Url::parse(origin).is_ok_and(|u| {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            u.host_str().is_some_and(|h| format!("{h}{port}") == host)
        }),
        (Some(_), None) => false,
    }
}

/// Pages that need a signed-in staff member; a partner is sent to the
/// portal, nobody to the sign-in page.
fn require_staff(ctx: &Ctx) -> Option<Response<Body>> {
    match &ctx.session {
        None => Some(see_other("/console/signin")),
        Some((_, s)) if s.role == Role::Partner => Some(see_other("/portal/")),
        Some((_, s)) if s.role == Role::Ingest => Some(error_page(
            &ApiError::Forbidden("an ingest key only sends events; it opens no pages".into()),
            true,
        )),
        Some(_) => None,
    }
}

async fn dispatch(ctx: &mut Ctx) -> Result<Response<Body>, ApiError> {
    let rest: Vec<String> = ctx.rest.clone();
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = ctx.method.clone();
    if let ["signin", ..] | ["signout"] = r.as_slice() {
        return signin::handle(ctx, &r).await;
    }
    if let Some(resp) = require_staff(ctx) {
        return Ok(resp);
    }
    match (&m, r.as_slice()) {
        (&Method::GET, []) => partners::overview(ctx).await,
        (_, ["partners", ..]) => partners::handle(ctx, &r[1..]).await,
        (_, ["links", ..]) => links::handle(ctx, &r[1..]).await,
        (_, ["payouts", ..]) => payouts::handle(ctx, &r[1..]).await,
        (_, ["fraud", ..]) => fraud::handle(ctx, &r[1..]).await,
        (_, ["reviews", ..]) => reviews::handle(ctx, &r[1..]).await,
        (_, ["api-keys", ..]) => keys::handle(ctx, &r[1..]).await,
        _ => Err(ApiError::NotFound("page")),
    }
}
