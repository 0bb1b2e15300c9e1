//! HTTP for the money side: merchant events (admin token or signed webhook),
//! exchange rates, coupons, balances, statements, referrals, customers and
//! payouts. Reads accept `wait_for=<seq>` to see a given event applied.

use super::http::ApiRequest;
use super::http::{
    blocking, json, only_params, parse_json, parse_time, parse_value, query_pairs, read_body,
    ApiError, Body,
};
use super::App;
use crate::commission::calculator::PayoutBatch;
use crate::commission::event::{CouponRecord, FxRates, PayoutConfirm, PayoutRun};
use crate::commission::ledger::{balances, LineKind};
use crate::commission::Event;
use crate::conversions::{digest, internal_id};
use crate::store::events::{Appended, NewEvent};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json as j, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Most events in one request.
pub const MAX_BATCH: usize = 1000;
/// Longest a read waits for `wait_for`.
const WAIT: Duration = Duration::from_secs(10);
/// Header naming the program of a signed delivery.
pub const PROGRAM_HEADER: &str = "x-refedge-program";
/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-refedge-signature";

const MERCHANT_TYPES: &[&str] = &[
    "signup",
    "payment",
    "refund",
    "chargeback",
    "cancellation",
    "plan_change",
];

/// Signs a body the way the events API expects (for clients and tests).
pub fn sign_webhook(secret: &str, t: i64, body: &[u8]) -> String {
    crate::signature::sign(secret, t, body)
}

/// Whether the request carries a webhook signature (then the admin token
/// is not required).
pub fn is_signed(req: &ApiRequest) -> bool {
    req.headers().contains_key(SIGNATURE_HEADER)
}

/// `POST /api/v1/events`: one event or an array of up to 1,000. A 2xx
/// means every accepted event is durably in the log.
pub async fn post_events(
    app: Arc<App>,
    req: ApiRequest,
    signed: bool,
) -> Result<Response<Body>, ApiError> {
    let webhook_program = if signed {
        let program = req
            .headers()
            .get(PROGRAM_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or(ApiError::Unauthorized)?;
        let sig = req
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or(ApiError::Unauthorized)?;
        Some((program, sig))
    } else {
        None
    };
    let body = read_body(req, app.config.max_body_bytes).await?;
    if let Some((program, sig)) = &webhook_program {
        let secret = app
            .config
            .programs
            .get(program)
            .and_then(|p| p.webhook_secret.as_deref())
            .ok_or(ApiError::Unauthorized)?;
        crate::signature::verify(secret, sig, &body, app.clock.now_s())
            .map_err(|_| ApiError::Unauthorized)?;
    }
    let value = parse_value(&body)?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        v @ Value::Object(_) => (vec![v], true),
        _ => {
            return Err(ApiError::invalid(
                "",
                "send one event object or an array of them",
            ))
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "",
            format!("a batch holds 1 to {MAX_BATCH} events"),
        ));
    }

    let signed_for = webhook_program.as_ref().map(|(p, _)| p.as_str());
    let mut results = ingest(&app, items, MERCHANT_TYPES, signed_for).await?;
    let count = |s: &str| results.iter().filter(|r| r["status"] == s).count();
    let (accepted, duplicates, conflicts) =
        (count("accepted"), count("duplicate"), count("conflict"));
    let last_seq = results
        .iter()
        .filter(|r| r["status"] == "accepted" || r["status"] == "duplicate")
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0);
    if single {
        let r = results.pop().expect("one result");
        let status = match r["status"].as_str() {
            Some("accepted") => StatusCode::CREATED,
            Some("duplicate") => StatusCode::OK,
            Some("conflict") => StatusCode::CONFLICT,
            _ => {
                return Err(ApiError::invalid(
                    r["field"].as_str().unwrap_or_default(),
                    r["error"].as_str().unwrap_or_default(),
                ))
            }
        };
        return Ok(json(status, &r));
    }
    let rejected = results.len() - accepted - duplicates - conflicts;
    Ok(json(
        StatusCode::OK,
        &j!({
            "accepted": accepted, "duplicates": duplicates, "conflicts": conflicts,
            "rejected": rejected, "last_seq": last_seq, "results": results,
        }),
    ))
}

/// Checks each event (its type among `types`, its program known and, for
/// a signed delivery, the signer's), appends the good ones durably and
/// answers one result per event, in order: `accepted` or `duplicate` with
/// its `seq`, `conflict`, or `rejected` with the field and reason. One bad
/// event never stops the others.
pub(super) async fn ingest(
    app: &Arc<App>,
    items: Vec<Value>,
    types: &[&str],
    signed_for: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    // Parse and check each; keep the good ones with their index.
    let mut results: Vec<Value> = vec![Value::Null; items.len()];
    let mut good: Vec<(usize, NewEvent)> = Vec::new();
    let mut needs_clicks = false;
    for (i, item) in items.into_iter().enumerate() {
        let d = digest(&item);
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let parsed = if !kind.is_empty() && !types.contains(&kind.as_str()) {
            Err(("type".to_string(), format!("{kind:?} is not a merchant event; use signup, payment, refund, chargeback, cancellation or plan_change")))
        } else {
            Event::from_value(item).map_err(|e| (e.field, e.reason))
        };
        let checked = parsed.and_then(|e| {
            let program = e.program().unwrap_or_default();
            if !app.config.programs.contains_key(program) {
                return Err(("program".into(), format!("unknown program {program:?}")));
            }
            if let Some(p) = signed_for {
                if p != program {
                    return Err(("program".into(), format!("this delivery is signed for {p}")));
                }
            }
            Ok(e)
        });
        match checked {
            Ok(e) => {
                if let Event::Signup(s) = &e {
                    // A token's click is looked up only where the program
                    // reviews paid search (see `App::add_review_flags`).
                    let reviews_tokens = s.attribution.token.is_some()
                        && app
                            .config
                            .programs
                            .get(&s.program)
                            .is_some_and(crate::program::Program::reviews_paid_search);
                    needs_clicks |= s.attribution.click_id.is_some() || reviews_tokens;
                }
                let id = e.id().unwrap_or_default().to_string();
                good.push((
                    i,
                    NewEvent {
                        id,
                        digest: d,
                        event: e,
                    },
                ));
            }
            Err((field, reason)) => {
                results[i] =
                    j!({"index": i, "status": "rejected", "error": reason, "field": field});
            }
        }
    }
    if needs_clicks {
        // A click served a moment ago may still be in the queue.
        let _ = tokio::time::timeout(Duration::from_secs(2), app.clicklog.barrier()).await;
    }
    let now = app.clock.now();
    let (indices, mut items): (Vec<_>, Vec<_>) = good
        .into_iter()
        .map(|(i, item)| ((i, item.id.clone()), item))
        .unzip();
    app.resolve_signups(&mut items).await?;
    let appended = app.append(items, now).await?;
    for ((i, id), outcome) in indices.into_iter().zip(appended) {
        results[i] = match outcome {
            Appended::Accepted(seq) => {
                j!({"index": i, "id": id, "status": "accepted", "seq": seq})
            }
            Appended::Duplicate(seq) => {
                j!({"index": i, "id": id, "status": "duplicate", "seq": seq})
            }
            Appended::Conflict(seq) => {
                j!({"index": i, "id": id, "status": "conflict", "seq": seq, "field": "id",
                    "error": "an event with this id and a different body was already accepted"})
            }
        };
    }
    Ok(results)
}

/// Appends one internal event and waits for it to be applied.
pub(super) async fn append_internal(
    app: &Arc<App>,
    event: Event,
    body: &Value,
) -> Result<(Appended, u64), ApiError> {
    let id = internal_id(&event);
    let item = NewEvent {
        id,
        digest: digest(body),
        event,
    };
    let out = app.append(vec![item], app.clock.now()).await?;
    let outcome = out[0];
    let seq = match outcome {
        Appended::Accepted(s) | Appended::Duplicate(s) => s,
        Appended::Conflict(_) => {
            return Err(ApiError::Conflict(
                "an entry with this key and different content already exists".into(),
            ))
        }
    };
    if !app.conversions.wait_for(seq, WAIT).await {
        return Err(ApiError::Timeout(format!(
            "recorded as event seq {seq}, but the calculator has not applied it within {} s; read again shortly",
            WAIT.as_secs()
        )));
    }
    Ok((outcome, seq))
}

fn status_of(a: Appended) -> StatusCode {
    match a {
        Appended::Accepted(_) => StatusCode::CREATED,
        _ => StatusCode::OK,
    }
}

/// `POST /api/v1/fx-rates`: `{at, base, rates: {CUR: "rate"}}`.
pub async fn post_fx_rates(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let body = read_body(req, app.config.max_body_bytes).await?;
    let rates: FxRates = parse_json(&body)?;
    let event = Event::FxRates(rates);
    event.check().map_err(|(f, r)| ApiError::invalid(f, r))?;
    let value = parse_value(&body)?;
    let (outcome, seq) = append_internal(&app, event, &value).await?;
    Ok(json(
        status_of(outcome),
        &j!({"status": "recorded", "seq": seq}),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CouponIn {
    code: String,
    partner_id: String,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    single_use: bool,
    #[serde(default)]
    max_redemptions: Option<u32>,
}

/// `POST /api/v1/coupons`: assigns a coupon code to a partner.
pub async fn post_coupon(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let body = read_body(req, app.config.max_body_bytes).await?;
    let c: CouponIn = parse_json(&body)?;
    if !crate::directory::is_valid_code(&c.code) {
        return Err(ApiError::invalid(
            "code",
            "must be 3 to 64 characters from A-Z, a-z, 0-9, '-' and '_'",
        ));
    }
    if partner_program(&app, &c.partner_id).is_none() {
        return Err(ApiError::invalid(
            "partner_id",
            format!("no partner with id {:?}", c.partner_id),
        ));
    }
    if c.max_redemptions == Some(0) {
        return Err(ApiError::invalid("max_redemptions", "must be at least 1"));
    }
    let record = CouponRecord {
        code: c.code,
        partner_id: c.partner_id,
        expires_at: c.expires_at,
        single_use: c.single_use,
        max_redemptions: c.max_redemptions,
    };
    let value = serde_json::to_value(&record).expect("serialises");
    let (outcome, seq) = append_internal(&app, Event::Coupon(record.clone()), &value).await?;
    Ok(json(
        status_of(outcome),
        &j!({"coupon": record, "redemptions": 0, "seq": seq}),
    ))
}

/// `GET /api/v1/coupons/{code}`: the coupon and its redemptions.
pub async fn get_coupon(
    app: Arc<App>,
    req: ApiRequest,
    code: &str,
) -> Result<Response<Body>, ApiError> {
    wait(&app, &query_pairs(&req)).await?;
    app.conversions.read(|c| match c.coupon(code) {
        Some((record, n)) => Ok(json(
            StatusCode::OK,
            &j!({"coupon": record, "redemptions": n}),
        )),
        None => Err(ApiError::NotFound("coupon")),
    })
}

/// The event log's last seq (in a cluster, the stream's: the local log
/// may still be replicating).
async fn log_head(app: &Arc<App>) -> Result<u64, ApiError> {
    Ok(match &app.cluster {
        None => {
            let a = app.clone();
            blocking(move || a.conversions.last_seq()).await??
        }
        Some(c) => c
            .stream_head()
            .await
            .map_err(|e| ApiError::Unavailable(format!("the cluster's event stream: {e}")))?,
    })
}

/// Waits until the calculator has applied every event in the log now (a
/// read that must see every earlier write).
pub(super) async fn caught_up(app: &Arc<App>) -> Result<(), ApiError> {
    let head = log_head(app).await?;
    if head > app.conversions.applied() && !app.conversions.wait_for(head, WAIT).await {
        return Err(ApiError::Timeout(format!(
            "the calculator has applied up to seq {} of {head} and did not catch up within {} s; retry",
            app.conversions.applied(),
            WAIT.as_secs()
        )));
    }
    Ok(())
}

/// Waits for `wait_for=<seq>` to be applied. A seq beyond the log's head
/// can never be reached: a client error, answered at once. A real timeout
/// is a 504 saying how far the calculator got.
pub(super) async fn wait(app: &Arc<App>, pairs: &[(String, String)]) -> Result<(), ApiError> {
    if let Some((_, v)) = pairs.iter().find(|(k, _)| k == "wait_for") {
        let seq: u64 = v
            .parse()
            .map_err(|_| ApiError::invalid("wait_for", "must be an event seq number"))?;
        if seq <= app.conversions.applied() {
            return Ok(());
        }
        let head = log_head(app).await?;
        if seq > head {
            return Err(ApiError::invalid(
                "wait_for",
                format!("seq {seq} is beyond the event log, whose last seq is {head}"),
            ));
        }
        if !app.conversions.wait_for(seq, WAIT).await {
            return Err(ApiError::Timeout(format!(
                "seq {seq} was not applied within {} s (the calculator has applied up to {}); retry",
                WAIT.as_secs(),
                app.conversions.applied()
            )));
        }
    }
    Ok(())
}

/// `GET /api/v1/problems?program=`: events the calculator failed on and
/// set aside (`quarantined`), and events applied with something they could
/// not do (`problems`: an unknown invoice, a missing exchange rate).
pub fn problems(app: &App, req: &ApiRequest) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(req);
    only_params(&pairs, &["program"])?;
    let program = param(&pairs, "program");
    if let Some(p) = program {
        known_program(app, p)?;
    }
    let wanted = |p: Option<&str>| program.is_none_or(|w| p == Some(w));
    let quarantined: Vec<_> = app
        .conversions
        .quarantined()
        .into_iter()
        .filter(|q| wanted(q.program.as_deref()))
        .collect();
    let problems = app.conversions.read(|c| {
        c.state
            .problems
            .iter()
            .filter(|p| wanted(p.program.as_deref()))
            .cloned()
            .collect::<Vec<_>>()
    });
    Ok(json(
        StatusCode::OK,
        &j!({"quarantined": quarantined, "problems": problems}),
    ))
}

/// A program key that must name a configured program.
pub fn known_program(app: &App, program: &str) -> Result<(), ApiError> {
    if app.config.programs.contains_key(program) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "program",
            format!("unknown program {program:?}"),
        ))
    }
}

pub(super) fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A partner's program, from the directory or, for a partner created on
/// another cluster node, from the ledger.
fn partner_program(app: &App, pid: &str) -> Option<String> {
    app.directory.partner(pid).map(|p| p.program).or_else(|| {
        app.conversions
            .read(|c| c.partner(pid).map(|p| p.program.clone()))
    })
}

/// `GET /api/v1/partners/{id}/balance?as_of=`
pub async fn balance(
    app: Arc<App>,
    req: ApiRequest,
    pid: &str,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["as_of", "wait_for"])?;
    let as_of = match param(&pairs, "as_of") {
        Some(v) => parse_time("as_of", v)?,
        None => app.clock.now(),
    };
    partner_program(&app, pid).ok_or(ApiError::NotFound("partner"))?;
    wait(&app, &pairs).await?;
    let (bals, standing) = app
        .conversions
        .read(|c| (c.balances(pid, as_of).unwrap_or_default(), c.standing(pid)));
    Ok(json(
        StatusCode::OK,
        &j!({"partner_id": pid, "as_of": as_of, "standing": standing, "balances": bals}),
    ))
}

/// `GET /api/v1/partners/{id}/statement?month=YYYY-MM`; for the partner
/// itself (`mask_customers`), customers masked as in its referrals.
pub async fn statement(
    app: Arc<App>,
    req: ApiRequest,
    pid: &str,
    mask_customers: bool,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["month", "wait_for"])?;
    let month = param(&pairs, "month")
        .ok_or_else(|| ApiError::invalid("month", "is required (YYYY-MM)"))?;
    let start = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("month", "must be YYYY-MM"))?;
    let end = start
        .checked_add_months(chrono::Months::new(1))
        .expect("in range");
    let start = Utc.from_utc_datetime(&start.and_hms_opt(0, 0, 0).expect("midnight"));
    let end = Utc.from_utc_datetime(&end.and_hms_opt(0, 0, 0).expect("midnight"));
    let program = partner_program(&app, pid).ok_or(ApiError::NotFound("partner"))?;
    wait(&app, &pairs).await?;
    let before = start - chrono::Duration::nanoseconds(1);
    let last = end - chrono::Duration::nanoseconds(1);
    let out = app.conversions.read(|c| {
        let lines = c.lines(pid);
        let opening = balances(lines.iter().copied(), before);
        let closing = balances(lines.iter().copied(), last);
        let in_month: Vec<_> = lines
            .iter()
            .filter(|l| l.at >= start && l.at < end)
            .collect();
        let shown: Vec<Value> = in_month
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(l).expect("lines serialise");
                if let (true, Some(c)) = (mask_customers, &l.customer_id) {
                    v["customer_id"] = Value::String(super::partner_reads::mask_customer(c));
                }
                v
            })
            .collect();
        let mut reward: BTreeMap<String, Decimal> = BTreeMap::new();
        for l in &in_month {
            if matches!(l.kind, LineKind::Commission | LineKind::TierAdjustment) {
                *reward.entry(l.currency.clone()).or_default() += l.amount;
            }
        }
        let tier = c.benefit_tier(&program, &reward, last);
        let reward: BTreeMap<String, String> = reward
            .into_iter()
            .map(|(k, v)| (k, format!("{v:.2}")))
            .collect();
        j!({
            "partner_id": pid, "month": month, "program": program,
            "opening": opening, "lines": shown, "closing": closing,
            "monthly_reward": reward, "benefit_tier": tier,
        })
    });
    Ok(json(StatusCode::OK, &out))
}

/// `GET /api/v1/referrals?partner=&program=&since=&limit=`: referrals and
/// rejections, oldest first, with their `counts`; `since` keeps those at
/// or after a time, `limit` only the newest N of each (`0`: the counts
/// alone).
pub async fn referrals(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(
        &pairs,
        &["partner", "program", "since", "limit", "wait_for"],
    )?;
    let since = param(&pairs, "since")
        .map(|v| parse_time("since", v))
        .transpose()?;
    let limit = param(&pairs, "limit")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| ApiError::invalid("limit", "must be a whole number"))
        })
        .transpose()?;
    wait(&app, &pairs).await?;
    let partner = param(&pairs, "partner");
    let program = param(&pairs, "program");
    let out = app.conversions.read(|c| {
        let after = |at: &DateTime<Utc>| since.is_none_or(|s| *at >= s);
        let referrals: Vec<_> = c
            .state
            .referrals
            .iter()
            .filter(|r| {
                partner.is_none_or(|p| r.partner_id == p)
                    && program.is_none_or(|p| r.program == p)
                    && after(&r.at)
            })
            .collect();
        let rejections: Vec<_> = c
            .state
            .rejections
            .iter()
            .filter(|r| {
                partner.is_none_or(|p| r.partner_id.as_deref() == Some(p))
                    && program.is_none_or(|p| r.program == p)
                    && after(&r.at)
            })
            .collect();
        let counts = j!({"referrals": referrals.len(), "rejections": rejections.len()});
        let newest = |n: usize| n.saturating_sub(limit.unwrap_or(usize::MAX));
        // Each with where its review stands, if it was held.
        let referrals: Vec<Value> = referrals[newest(referrals.len())..]
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("referrals serialise");
                if let Some(review) = c.review_of(&r.program, &r.customer_id) {
                    v["review"] = serde_json::to_value(review.status).expect("serialises");
                }
                v
            })
            .collect();
        j!({"referrals": referrals,
            "rejections": &rejections[newest(rejections.len())..],
            "counts": counts})
    });
    Ok(json(StatusCode::OK, &out))
}

/// `GET /api/v1/customers/{id}?program=`: who the customer is bound to, or
/// why not.
pub async fn customer(
    app: Arc<App>,
    req: ApiRequest,
    cid: &str,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["program", "wait_for"])?;
    wait(&app, &pairs).await?;
    let programs: Vec<String> = match param(&pairs, "program") {
        Some(p) => vec![p.to_string()],
        None => app.config.programs.keys().cloned().collect(),
    };
    let out = app.conversions.read(|c| {
        let mut found = Vec::new();
        for p in &programs {
            let (referral, rejections) = c.customer(p, cid);
            if referral.is_some() || !rejections.is_empty() {
                found.push(j!({"program": p, "referral": referral, "rejections": rejections}));
            }
        }
        found
    });
    if out.is_empty() {
        return Err(ApiError::NotFound("customer"));
    }
    Ok(json(
        StatusCode::OK,
        &j!({"customer_id": cid, "programs": out}),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RunIn {
    program: String,
    #[serde(deserialize_with = "crate::commission::event::instant")]
    as_of: DateTime<Utc>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/payouts/run`: the batch of what is due on `as_of`;
/// idempotent per program and date.
pub async fn run_payouts(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let body = read_body(req, app.config.max_body_bytes).await?;
    let r: RunIn = parse_json(&body)?;
    let Some(program) = app.config.programs.get(&r.program) else {
        return Err(ApiError::invalid(
            "program",
            format!("unknown program {:?}", r.program),
        ));
    };
    if program.money.is_none() {
        return Err(ApiError::invalid(
            "program",
            "this program has no commission rules",
        ));
    }
    // Last click per partner: the inactivity rule needs it.
    let store = app.store.clone();
    let partners: Vec<String> = app.conversions.read(|c| {
        c.partner_ids()
            .filter(|p| c.partner(p).is_some_and(|x| x.program == r.program))
            .cloned()
            .collect()
    });
    let as_of = r.as_of;
    let cluster = app.cluster.is_some();
    let last_clicks = blocking(
        move || -> Result<BTreeMap<String, DateTime<Utc>>, crate::store::StoreError> {
            let mut out = BTreeMap::new();
            for p in partners {
                // In cluster mode, the newest of any edge's.
                let here = store.last_click_of(&p)?;
                let anywhere = if cluster {
                    store.cluster_last_click_of(&p)?
                } else {
                    None
                };
                if let Some(id) = here.max(anywhere) {
                    let t = crate::clock::ms_to_datetime(id.timestamp_ms());
                    if t <= as_of {
                        out.insert(p, t);
                    }
                }
            }
            Ok(out)
        },
    )
    .await??;
    let run = PayoutRun {
        program: r.program.clone(),
        as_of: r.as_of,
        last_clicks,
        dry_run: r.dry_run,
    };
    if r.dry_run {
        let batch = app.conversions.with_mut(|c| c.payout_run("dry-run", &run));
        return Ok(json(StatusCode::OK, &batch));
    }
    let value = j!({"program": r.program, "as_of": r.as_of});
    let (outcome, _) = append_internal(&app, Event::PayoutRun(run), &value).await?;
    let id = format!("po_{}_{}", r.program, r.as_of.format("%Y%m%d"));
    let batch = app.conversions.read(|c| c.state.payouts.get(&id).cloned());
    match batch {
        Some(b) => Ok(json(status_of(outcome), &b)),
        None => Err(ApiError::Conflict(format!(
            "a payout for {} on {} was already run with another time of day",
            r.program,
            r.as_of.date_naive()
        ))),
    }
}

/// `GET /api/v1/payouts?program=&wait_for=`: every batch, newest first, with its
/// totals by currency (items: `GET /api/v1/payouts/{id}`).
pub async fn list_payouts(app: Arc<App>, req: ApiRequest) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&req);
    only_params(&pairs, &["program", "wait_for"])?;
    let program = param(&pairs, "program");
    if let Some(p) = program {
        known_program(&app, p)?;
    }
    wait(&app, &pairs).await?;
    let mut out: Vec<serde_json::Value> = app.conversions.read(|c| {
        c.state
            .payouts
            .values()
            .filter(|b| program.is_none_or(|p| b.program == p))
            .map(|b| {
                let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
                for i in &b.items {
                    *totals.entry(i.currency.clone()).or_default() += i.amount;
                }
                let totals: BTreeMap<String, String> = totals
                    .into_iter()
                    .map(|(k, v)| (k, format!("{v:.2}")))
                    .collect();
                j!({
                    "id": b.id, "program": b.program, "as_of": b.as_of, "status": b.status,
                    "partners": b.items.len(), "totals": totals,
                })
            })
            .collect()
    });
    out.sort_by(|a, b| b["as_of"].as_str().cmp(&a["as_of"].as_str()));
    Ok(json(StatusCode::OK, &j!({"payouts": out})))
}

fn batch_of(app: &App, id: &str) -> Result<PayoutBatch, ApiError> {
    app.conversions
        .read(|c| c.state.payouts.get(id).cloned())
        .ok_or(ApiError::NotFound("payout"))
}

/// `GET /api/v1/payouts/{id}`
pub async fn get_payout(
    app: Arc<App>,
    req: ApiRequest,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    wait(&app, &query_pairs(&req)).await?;
    Ok(json(StatusCode::OK, &batch_of(&app, id)?))
}

/// `GET /api/v1/payouts/{id}/csv`: for the payments platform.
pub async fn payout_csv(app: Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    let b = batch_of(&app, id)?;
    let mut out =
        String::from("payout_id,program,as_of,partner_id,name,email,amount,currency,method\n");
    for i in &b.items {
        let p = app.conversions.read(|c| {
            c.partner(&i.partner_id)
                .map(|p| (p.name.clone().unwrap_or_default(), p.email.clone()))
        });
        let esc = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.2},{},{}\n",
            b.id,
            b.program,
            b.as_of.date_naive(),
            i.partner_id,
            esc(p.as_ref().map_or("", |p| p.0.as_str())),
            esc(p.as_ref().map_or("", |p| p.1.as_str())),
            i.amount,
            i.currency,
            i.method
        ));
    }
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::try_from(format!("attachment; filename=\"{id}.csv\"")) {
        r.headers_mut().insert("content-disposition", v);
    }
    Ok(r)
}

/// `POST /api/v1/payouts/{id}/confirm`: marks the batch paid.
pub async fn confirm_payout(app: Arc<App>, id: &str) -> Result<Response<Body>, ApiError> {
    batch_of(&app, id)?;
    let ev = PayoutConfirm {
        payout_id: id.to_string(),
        occurred_at: app.clock.now(),
    };
    let value = j!({"payout_id": id});
    append_internal(&app, Event::PayoutConfirm(ev), &value).await?;
    Ok(json(StatusCode::OK, &batch_of(&app, id)?))
}
