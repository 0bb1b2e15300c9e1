//! The API's routes as data, and the OpenAPI 3.1 description made from
//! them (`GET /api/v1/openapi.json`).
//!
//! [`ROUTES`] is the router's own list: a request whose method and path are
//! not in it is refused before any handler runs (`404`, or `405` for a
//! known path), so a handler cannot exist without its description, and
//! `tests/openapi.rs` calls every entry to prove each reaches a handler.
//! Request bodies' schemas come from the very types that parse them
//! (`schemars`), the roles of each route from the access rules
//! ([`crate::access::check`]), so neither can drift from the code.

use super::{api, api_keys, money, reviews, webhooks_api};
use crate::access::{Access, Principal, Role};
use crate::commission::event;
use hyper::Method;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (the redirect, health checks).
    Open,
    /// `Authorization: Bearer` with the admin token or an API key, as the
    /// access rules allow.
    Bearer,
    /// `Authorization: Bearer` (the `ingest` role) or a program's signed
    /// delivery (`X-Refedge-Signature`).
    BearerOrSigned,
    /// Stripe's `Stripe-Signature`.
    Stripe,
}

/// A request body: the schema of the type that parses it, and an example.
#[derive(Clone, Copy)]
pub struct BodySpec {
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    pub example: fn() -> Value,
}

/// One route.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// With `{name}` for a path parameter.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub query: &'static [&'static str],
    pub body: Option<BodySpec>,
    /// Status of a success.
    pub ok: u16,
    /// Media type of a success (`application/json`, `text/csv`, …).
    pub produces: &'static str,
    pub auth: Auth,
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The events API's body: one merchant event or a batch. (Doc-only types:
/// never built; `post_events` parses each item with [`event::Event`].)
#[derive(serde::Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum EventsBody {
    One(MerchantEvent),
    /// 1 to 1,000 events.
    Batch(Vec<MerchantEvent>),
}

/// A merchant event, by its `type`.
#[derive(serde::Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code, clippy::large_enum_variant)]
enum MerchantEvent {
    Signup(event::Signup),
    Payment(event::Payment),
    Refund(event::Reversal),
    Chargeback(event::Reversal),
    Cancellation(event::Cancellation),
    PlanChange(event::PlanChange),
}

/// The error every refusal answers with.
#[derive(serde::Serialize, JsonSchema)]
#[allow(dead_code)]
struct Error {
    /// What is wrong, in words.
    error: String,
    /// The field, header or parameter at fault, when there is one.
    field: Option<String>,
}

const fn get(path: &'static str, tag: &'static str, summary: &'static str) -> Route {
    Route {
        method: "GET",
        path,
        tag,
        summary,
        query: &[],
        body: None,
        ok: 200,
        produces: "application/json",
        auth: Auth::Bearer,
    }
}

const fn with(method: &'static str, mut r: Route, body: Option<BodySpec>, ok: u16) -> Route {
    r.method = method;
    r.body = body;
    r.ok = ok;
    r
}

const fn query(mut r: Route, q: &'static [&'static str]) -> Route {
    r.query = q;
    r
}

const fn produces(mut r: Route, p: &'static str, auth: Auth) -> Route {
    r.produces = p;
    r.auth = auth;
    r
}

fn body<T: JsonSchema>(example: fn() -> Value) -> Option<BodySpec> {
    Some(BodySpec {
        schema: schema::<T>,
        example,
    })
}

/// Every route refedge serves, but the console's and portal's pages.
pub fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let p = "partners";
        vec![
            produces(get("/r/{code}", "redirect", "A tracked link: redirect, attribution cookie, click recorded"), "redirect", Auth::Open),
            produces(get("/healthz", "operations", "Alive"), "text/plain", Auth::Open),
            produces(get("/readyz", "operations", "Ready: the store writes and the calculator keeps up"), "application/json", Auth::Open),
            produces(get("/metrics", "operations", "Prometheus metrics"), "text/plain", Auth::Open),
            get("/api/v1/openapi.json", "operations", "This description"),
            produces(
                with("POST", get("/integrations/stripe/{program}", "integrations", "Stripe webhook deliveries for a program"), None, 200),
                "application/json",
                Auth::Stripe,
            ),
            with("POST", get("/api/v1/partners", p, "Create a partner"), body::<api::PartnerIn>(|| json!({"program": "krispcall", "name": "Ann's Blog", "email": "ann@blog.example", "website": "https://blog.example"})), 201),
            query(get("/api/v1/partners", p, "Search and list partners"), &["q", "program", "status", "limit", "after"]),
            get("/api/v1/partners/{id}", p, "A partner"),
            with("PATCH", get("/api/v1/partners/{id}", p, "Change a partner's standing, with a reason"), body::<api::StandingIn>(|| json!({"status": "suspended", "reason": "cookie stuffing"})), 200),
            get("/api/v1/partners/{id}/audit", p, "A partner's standing changes"),
            query(get("/api/v1/partners/{id}/balance", "money", "A partner's balances per currency"), &["as_of", "wait_for"]),
            query(get("/api/v1/partners/{id}/statement", "money", "A partner's month: opening, lines, closing"), &["month", "wait_for"]),
            query(get("/api/v1/partners/{id}/links", p, "A partner's links"), &["limit", "after"]),
            get("/api/v1/partners/{id}/referrals", p, "A partner's referrals and rejections"),
            get("/api/v1/partners/{id}/payouts", p, "A partner's payouts"),
            with("POST", get("/api/v1/partners/{id}/portal-link", p, "A one-time portal sign-in link"), None, 201),
            query(get("/api/v1/partners/{id}/clicks/daily", "statistics", "A partner's clicks per day"), &["from", "to"]),
            with("PUT", get("/api/v1/partners/{id}/postback", "integrations", "Set a partner's postback template"), body::<webhooks_api::PostbackIn>(|| json!({"url_template": "https://track.partner.example/pb?click={refclk}&payout={amount}&cur={currency}", "events": ["commission.created"]})), 201),
            get("/api/v1/partners/{id}/postback", "integrations", "A partner's postback template"),
            with("DELETE", get("/api/v1/partners/{id}/postback", "integrations", "Remove a partner's postback"), None, 200),
            with("POST", get("/api/v1/links", "links", "Create a tracked link"), body::<api::LinkIn>(|| json!({"partner_id": "p_3f9a2c", "destination": "https://krispcall.com/pricing?utm_source=ann", "code": "ann-spring"})), 201),
            get("/api/v1/links/{code}", "links", "A link and its click count"),
            with("DELETE", get("/api/v1/links/{code}", "links", "Disable a link"), None, 200),
            query(get("/api/v1/links/{code}/stats", "statistics", "A link's clicks per day, referrer host and device"), &["from", "to"]),
            query(get("/api/v1/clicks", "clicks", "Recorded clicks, newest first"), &["partner", "link", "from", "to", "limit", "cursor"]),
            get("/api/v1/clicks/{id}", "clicks", "One click"),
            get("/api/v1/keys", "keys", "Attribution signing keys (ids and state)"),
            with("POST", get("/api/v1/keys/rotate", "keys", "Add a signing key and sign with it"), None, 201),
            with("POST", get("/api/v1/keys/{id}/retire", "keys", "Stop accepting a signing key"), None, 200),
            produces(
                with("POST", get("/api/v1/events", "money", "Merchant events: one or a batch of up to 1,000"), body::<EventsBody>(|| json!({"id": "evt-1002", "type": "payment", "program": "krispcall", "occurred_at": "2026-03-02T09:05:00Z", "customer_id": "cus_42", "invoice_id": "INV-1", "currency": "USD", "lines": [{"kind": "subscription", "amount": "30.00", "plan": "standard", "unit_price": "15.00", "quantity": 2}]})), 201),
                "application/json",
                Auth::BearerOrSigned,
            ),
            with("POST", get("/api/v1/fx-rates", "money", "An exchange-rate table"), body::<event::FxRates>(|| json!({"at": "2026-03-01T00:00:00Z", "base": "USD", "rates": {"EUR": "0.92", "UAH": "41.2"}})), 201),
            with("POST", get("/api/v1/coupons", "money", "Assign a coupon code to a partner"), body::<money::CouponIn>(|| json!({"code": "ANN-SPRING", "partner_id": "p_3f9a2c", "single_use": true})), 201),
            query(get("/api/v1/coupons/{code}", "money", "A coupon and its redemptions"), &["wait_for"]),
            query(get("/api/v1/referrals", "money", "Referrals and rejections, with counts"), &["partner", "program", "since", "limit", "wait_for"]),
            query(get("/api/v1/problems", "money", "Quarantined events and problems"), &["program"]),
            query(get("/api/v1/customers/{id}", "money", "Who a customer is bound to, or why not"), &["program", "wait_for"]),
            query(get("/api/v1/fraud/summary", "fraud", "Flagged clicks by reason over a period"), &["program", "from", "to"]),
            query(get("/api/v1/fraud/clicks", "fraud", "Flagged clicks with their evidence"), &["reason", "partner", "program", "from", "to", "limit", "cursor"]),
            query(get("/api/v1/fraud/partners", "fraud", "Partners ranked by suspicious share"), &["from", "to", "limit"]),
            get("/api/v1/fraud/partners/{id}", "fraud", "A partner's fraud profile"),
            get("/api/v1/api-keys", "keys", "API keys (never their secrets)"),
            with("POST", get("/api/v1/api-keys", "keys", "Create an API key; its secret is shown once"), body::<api_keys::KeyIn>(|| json!({"name": "billing", "role": "ingest"})), 201),
            with("DELETE", get("/api/v1/api-keys/{id}", "keys", "Revoke an API key at once"), None, 200),
            query(get("/api/v1/stats/daily", "statistics", "Clicks per day of a program, partner or link"), &["program", "partner", "link", "from", "to"]),
            query(get("/api/v1/stats/top", "statistics", "The period's busiest partners or links"), &["by", "from", "to", "limit"]),
            query(get("/api/v1/stats/commissions", "statistics", "Commission earned and reversed in a period"), &["from", "to", "wait_for"]),
            query(get("/api/v1/payouts", "payouts", "Payout batches"), &["program", "wait_for"]),
            with("POST", get("/api/v1/payouts/run", "payouts", "Pay out what is due on a date (or a dry run)"), body::<money::RunIn>(|| json!({"program": "krispcall", "as_of": "2026-04-13", "dry_run": true})), 200),
            get("/api/v1/payouts/{id}", "payouts", "A payout batch"),
            produces(get("/api/v1/payouts/{id}/csv", "payouts", "A payout batch as CSV for the payments platform"), "text/csv", Auth::Bearer),
            with("POST", get("/api/v1/payouts/{id}/confirm", "payouts", "Confirm a batch paid"), None, 200),
            query(get("/api/v1/reviews", "reviews", "The review queue"), &["status", "program", "partner", "limit", "offset", "wait_for"]),
            get("/api/v1/reviews/{id}", "reviews", "One review"),
            with("POST", get("/api/v1/reviews/{id}", "reviews", "Approve or reject held commissions"), body::<reviews::DecisionIn>(|| json!({"decision": "approve", "reason": "checked the customer's domain"})), 200),
            with("POST", get("/api/v1/webhooks", "integrations", "Add a webhook endpoint; its secret is shown once"), body::<webhooks_api::EndpointIn>(|| json!({"url": "https://billing.acme.example/refedge", "events": ["referral.created", "commission.created"]})), 201),
            get("/api/v1/webhooks", "integrations", "Webhook endpoints"),
            get("/api/v1/webhooks/{id}", "integrations", "A webhook endpoint"),
            with("DELETE", get("/api/v1/webhooks/{id}", "integrations", "Remove a webhook endpoint"), None, 200),
            with("POST", get("/api/v1/webhooks/{id}/enable", "integrations", "Send again to an endpoint disabled after failures"), None, 200),
            query(get("/api/v1/webhooks/{id}/deliveries", "integrations", "An endpoint's deliveries and attempts"), &["limit"]),
            with("POST", get("/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver", "integrations", "Send one delivery again"), None, 202),
        ]
    })
}

/// Whether a path matches a route's pattern.
fn matches(pattern: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    parts.len() == segments.len()
        && parts
            .iter()
            .zip(segments)
            .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
}

/// How many literal segments a pattern has (the most specific wins).
fn literals(pattern: &str) -> usize {
    pattern.split('/').filter(|p| !p.starts_with('{')).count()
}

/// The route a request's path matches (any method), most specific first:
/// `/api/v1/payouts/run` before `/api/v1/payouts/{id}`.
pub fn path_route(segments: &[&str]) -> Option<&'static Route> {
    routes()
        .iter()
        .filter(|r| matches(r.path, segments))
        .max_by_key(|r| literals(r.path))
}

/// The route of a method and path.
pub fn find(method: &Method, segments: &[&str]) -> Option<&'static Route> {
    let best = path_route(segments)?;
    routes()
        .iter()
        .find(|r| r.path == best.path && r.method == method.as_str())
}

/// The roles that may call a bearer route (from the access rules).
fn roles(r: &Route) -> Vec<&'static str> {
    let rest: Vec<&str> = r
        .path
        .trim_start_matches("/api/v1/")
        .split('/')
        .map(|s| if s.starts_with('{') { "x" } else { s })
        .collect();
    let method = Method::from_bytes(r.method.as_bytes()).expect("a method");
    [
        Role::Admin,
        Role::Marketing,
        Role::Fraud,
        Role::Finance,
        Role::Ingest,
        Role::Partner,
    ]
    .into_iter()
    .filter(|role| {
        let p = Principal {
            role: *role,
            partner_id: Some("x".into()),
            key_id: Some("k".into()),
        };
        !matches!(crate::access::check(&p, &method, &rest), Access::Denied)
    })
    .map(Role::label)
    .collect()
}

/// The OpenAPI 3.1 document (made once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let error = g.subschema_for::<Error>();
    let mut paths = Map::new();
    for r in routes() {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert("tags".into(), json!([r.tag]));
        op.insert(
            "operationId".into(),
            json!(format!(
                "{}{}",
                r.method.to_ascii_lowercase(),
                r.path.replace(['/', '{', '}', '-', '.'], "_")
            )),
        );
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| {
                json!({"name": s.trim_matches(['{', '}']), "in": "path", "required": true,
                       "schema": {"type": "string"}})
            })
            .collect();
        params.extend(r.query.iter().map(
            |q| json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}),
        ));
        if r.auth == Auth::Stripe {
            params.push(json!({"name": "Stripe-Signature", "in": "header", "required": true,
                "schema": {"type": "string"}, "description": "t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]"}));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(b) = &r.body {
            let s = (b.schema)(&mut g);
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {
                    "schema": s, "example": (b.example)()}}}),
            );
        }
        let mut responses = Map::new();
        let ok = match r.produces {
            "redirect" => {
                json!({"description": "Redirect to the link's destination (Location), with the attribution cookie"})
            }
            media => json!({"description": "Success", "content": {media: {"schema":
                if media == "application/json" { json!({"type": "object"}) } else { json!({"type": "string"}) }}}}),
        };
        responses.insert(r.ok.to_string(), ok);
        let err = |what: &str| json!({"description": what, "content": {"application/json": {"schema": error.clone()}}});
        match r.auth {
            Auth::Open => {}
            Auth::Stripe => {
                responses.insert("400".into(), err("Bad or missing signature, or an API version refedge does not read; nothing changed"));
                responses.insert(
                    "409".into(),
                    err("A payment whose invoice is not known yet: Stripe retries"),
                );
            }
            Auth::Bearer | Auth::BearerOrSigned => {
                responses.insert("401".into(), err("No or a wrong bearer token"));
                responses.insert("403".into(), err("The key's role may not use this route"));
            }
        }
        if r.path.contains('{') && r.auth != Auth::Open {
            responses.insert(
                "404".into(),
                err("Not found (or another partner's, for a partner key)"),
            );
        }
        if r.body.is_some() || r.auth == Auth::Stripe || r.path.contains('{') || !r.query.is_empty()
        {
            responses.insert(
                "422".into(),
                err("A field, parameter or path segment is missing or wrong: `field` names it"),
            );
        }
        if r.method != "GET" && r.auth != Auth::Open {
            responses.insert("409".into(), err("Conflicts with what is recorded (the same id with other content, a decision already made)"));
        }
        if r.query.contains(&"wait_for") {
            responses.insert(
                "504".into(),
                err("wait_for: the calculator did not reach that event in time; read again"),
            );
        }
        if r.auth != Auth::Open {
            responses.insert("503".into(), err("The store cannot write now (a full disk): nothing was recorded; retry (Retry-After)"));
        }
        op.insert("responses".into(), Value::Object(responses));
        match r.auth {
            Auth::Open => {
                op.insert("security".into(), json!([]));
            }
            Auth::Stripe => {
                op.insert("security".into(), json!([{"stripeSignature": []}]));
            }
            Auth::Bearer => {
                op.insert("security".into(), json!([{"bearer": []}]));
                op.insert("x-roles".into(), json!(roles(r)));
            }
            Auth::BearerOrSigned => {
                op.insert(
                    "security".into(),
                    json!([{"bearer": []}, {"webhookSignature": [], "program": []}]),
                );
                op.insert("x-roles".into(), json!(roles(r)));
            }
        }
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[r.method.to_ascii_lowercase()] = Value::Object(op);
    }
    let schemas = g.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "refedge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Referral tracking: tracked redirects, partners and links, merchant events, commissions, payouts, fraud, webhooks. Errors are {\"error\", \"field\"}. Amounts are decimal strings.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                    "description": "The admin token or an API key (rk_…); x-roles lists the roles that may call"},
                "webhookSignature": {"type": "apiKey", "in": "header", "name": "X-Refedge-Signature",
                    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256(program's webhook_secret, \"<t>.<body>\")>"},
                "program": {"type": "apiKey", "in": "header", "name": "X-Refedge-Program"},
                "stripeSignature": {"type": "apiKey", "in": "header", "name": "Stripe-Signature"},
            },
        },
    })
}
