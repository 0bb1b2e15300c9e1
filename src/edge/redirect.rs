//! The hot path: `GET|HEAD /r/{code}` → `302` to the destination with a
//! signed attribution cookie. One in-memory lookup, one HMAC, one queue
//! push; never a disk wait.

use super::client_ip::visitor_ip;
use super::http::{text, ApiError, Body};
use super::App;
use crate::directory::is_valid_code;
use crate::fraud::{Action, ClickFacts};
use crate::id::ClickId;
use crate::model::{Click, CookieOutcome, Evidence, EvidenceField};
use crate::program::Attribution;
use crate::token::{Claims, TokenError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use smol_str::SmolStr;
use std::borrow::Cow;
use std::net::SocketAddr;

/// Query parameter carrying the click id to the destination.
pub const CLICK_PARAM: &str = "refclk";

/// Answers one tracked-link request.
pub fn redirect<B>(app: &App, peer: SocketAddr, req: &Request<B>, code: &str) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        _ => return ApiError::MethodNotAllowed.into_response(),
    };
    if !is_valid_code(code) {
        return text(StatusCode::NOT_FOUND, "unknown link\n");
    }
    // Found by exactly these bytes: `code` is the link's code from here on.
    let Some(live) = app.directory.live_link(code) else {
        if app.directory.is_disabled(code) {
            return text(StatusCode::GONE, "this link has been disabled\n");
        }
        return text(StatusCode::NOT_FOUND, "unknown link\n");
    };
    let program = &live.partner.program;
    let now_ms = app.clock.now_ms();
    let now_s = now_ms.div_euclid(1000);
    let headers = req.headers();
    let ip = visitor_ip(peer.ip(), headers, &app.config.trusted_proxies);
    // The verdict's visitor state is likely a cache miss: start it now so
    // it overlaps the cookie and header work below.
    app.guard.prefetch(&program.key, ip);

    // One read of the keyring for the cookie's check and the new cookie;
    // rotations (rare) wait for the click.
    let keyring = app.keyring.read().expect("keyring lock");
    let mut prior_token_error = None;
    let mut keep_existing = false;
    if let Some(token) = cookie_value(headers, &app.config.cookie.name) {
        match keyring.verify(token, now_s) {
            Ok(claims) => {
                keep_existing = program.attribution == Attribution::FirstClick
                    && claims.program == program.key
                    && *claims.partner_id != *live.partner.id;
            }
            Err(e) => {
                app.metrics
                    .tokens_rejected
                    .with_label_values(&[e.label()])
                    .inc();
                // Expired cookies and retired keys are not tampering.
                if !matches!(e, TokenError::Expired | TokenError::RetiredKey) {
                    prior_token_error = Some(e.label());
                }
            }
        }
    }

    let seen = Seen::new(headers);
    let verdict = app.guard.click(&ClickFacts {
        head: method == "HEAD",
        ip: Some(ip),
        user_agent: as_text(seen.user_agent),
        accept: as_text(seen.accept),
        accept_language: as_text(seen.accept_language),
        sec_fetch_dest: as_text(seen.sec_fetch_dest),
        sec_fetch_mode: as_text(seen.sec_fetch_mode),
        sec_purpose: as_text(seen.sec_purpose),
        purpose: as_text(seen.purpose),
        referer: as_text(seen.referer),
        query: req.uri().query(),
        program: &program.key,
        partner: &live.partner.id,
        link: code,
        partner_hosts: &live.partner.hosts,
        token_error: prior_token_error,
        now_ms: Some(now_ms),
    });
    let label = verdict.label();
    let counters = app.program_metrics(&program.key);
    if verdict.flags.is_empty() {
        counters.valid.inc();
    }
    for f in &verdict.flags {
        app.metrics
            .clicks_by_verdict
            .with_label_values(&[&program.key, label, f.reason.label()])
            .inc();
    }
    match verdict.action {
        Action::TooMany => {
            let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("60"));
            return r;
        }
        Action::Block => return blocked_page(&live.destination),
        Action::Redirect => {}
    }
    // A suspended or terminated partner's clicks redirect but earn nothing.
    // A program that reviews paid search lets such a click attribute: its
    // referral is then held for an analyst instead of refused.
    let soft = verdict.flags.is_empty()
        || (program.reviews_paid_search()
            && verdict
                .flags
                .iter()
                .all(|f| f.reason == crate::fraud::Reason::PaidSearch));
    let attributable = soft && live.partner.active();

    let click_id = app.ids.next(now_ms);
    let location = build_location(&live.destination, req.uri().query(), click_id);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    let location = HeaderValue::try_from(location).unwrap_or_else(|_| {
        // Only a strange incoming query can make this fail: drop it.
        HeaderValue::try_from(build_location(&live.destination, None, click_id))
            .expect("destination and click id are ASCII")
    });
    h.insert(LOCATION, location);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let cookie_outcome = if !attributable {
        CookieOutcome::NotSet
    } else if keep_existing {
        CookieOutcome::KeptExisting
    } else {
        let claims = Claims {
            click_id,
            program: Cow::Borrowed(&program.key),
            partner_id: Cow::Borrowed(&live.partner.id),
            link: Cow::Borrowed(code),
            issued_at: now_s,
            expires_at: now_s + program.cookie_seconds(),
        };
        let mut cookie = String::with_capacity(320);
        cookie.push_str(&app.config.cookie.name);
        cookie.push('=');
        keyring.sign_into(&claims, &mut cookie);
        cookie.push_str("; Max-Age=");
        cookie.push_str(itoa(program.cookie_seconds(), &mut [0u8; 20]));
        cookie.push_str(&app.cookie_attributes);
        h.insert(
            SET_COOKIE,
            HeaderValue::try_from(cookie).expect("cookie is ASCII"),
        );
        CookieOutcome::Set
    };
    drop(keyring);

    app.clicklog.enqueue(Click {
        id: click_id,
        link: SmolStr::new(code),
        partner_id: live.partner.id.clone(),
        program: live.partner.program_key.clone(),
        method,
        ip,
        evidence: seen.evidence(req.uri().query()),
        cookie: cookie_outcome,
        prior_token_error,
        verdict: label,
        flags: verdict.flags,
    });
    counters.served.inc();
    app.metrics
        .redirect_seconds
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The program blocks this click; the visitor may still go on by hand.
fn blocked_page(destination: &str) -> Response<Body> {
    let escaped = destination
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Link not tracked</title>\
         <p>This link cannot be used with paid search ads. \
         <a href=\"{escaped}\">Continue to the site</a>.</p>\n"
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The destination with the visitor's query parameters appended (except a
/// `refclk` they tried to bring) and `refclk=<click id>` last, before any
/// fragment.
pub fn build_location(destination: &str, incoming: Option<&str>, id: ClickId) -> String {
    // Scans bytes: with `str`'s `find` and `split` on char patterns the
    // location took 1,511 instructions a redirect, 1,097 now (callgrind of
    // the redirect bench).
    let extra = incoming.map_or(0, str::len);
    let mut out = String::with_capacity(destination.len() + extra + 40);
    let (base, fragment) = destination.split_at(position(destination, b'#'));
    out.push_str(base);
    let mut sep = if !base.as_bytes().contains(&b'?') {
        "?"
    } else if base.ends_with(['?', '&']) {
        ""
    } else {
        "&"
    };
    let mut rest = incoming.unwrap_or_default();
    while !rest.is_empty() {
        let end = position(rest, b'&');
        let pair = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        // The key is the part before the first `=`.
        let forged = pair
            .strip_prefix(CLICK_PARAM)
            .is_some_and(|after| after.is_empty() || after.starts_with('='));
        if pair.is_empty() || forged {
            continue;
        }
        out.push_str(sep);
        out.push_str(pair);
        sep = "&";
    }
    out.push_str(sep);
    out.push_str(CLICK_PARAM);
    out.push('=');
    let mut buf = [0u8; 26];
    id.encode(&mut buf);
    out.push_str(std::str::from_utf8(&buf).expect("base32 is ASCII"));
    out.push_str(fragment);
    out
}

/// Where `byte` (ASCII) first is in `text`, or its length.
fn position(text: &str, byte: u8) -> usize {
    text.bytes().position(|b| b == byte).unwrap_or(text.len())
}

/// The value of cookie `name` from the request's `Cookie` headers.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(header_text)
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim().trim_matches('"'))
        })
}

/// A header's value, checked once: text, or bytes that are not.
#[derive(Clone, Copy)]
enum Value<'h> {
    Text(&'h str),
    Bytes(&'h [u8]),
}

/// A header's value as text when it is ASCII: what `HeaderValue::to_str`
/// accepts, since a `HeaderValue` never holds control characters other
/// than tab, but checked a word at a time (`to_str` goes byte by byte: ~10%
/// of the in-process redirect's samples) and once: a UTF-8 check before
/// the ASCII one went byte by byte over each value's unaligned ends, 1,400
/// of a redirect's ~19,000 instructions (callgrind).
fn header_text(v: &HeaderValue) -> Option<&str> {
    let bytes = v.as_bytes();
    if !bytes.is_ascii() {
        return None;
    }
    // SAFETY: every ASCII byte sequence is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

impl<'h> Value<'h> {
    fn of(v: &'h HeaderValue) -> Self {
        match header_text(v) {
            Some(t) => Self::Text(t),
            None => Self::Bytes(v.as_bytes()),
        }
    }
}

/// A header's value as text, if it is text.
fn as_text(v: Option<Value<'_>>) -> Option<&str> {
    match v {
        Some(Value::Text(t)) => Some(t),
        _ => None,
    }
}

/// The request headers the redirect reads, each found once (the verdict
/// reads them as text, the click keeps them as evidence).
#[derive(Default)]
struct Seen<'h> {
    user_agent: Option<Value<'h>>,
    referer: Option<Value<'h>>,
    accept: Option<Value<'h>>,
    accept_language: Option<Value<'h>>,
    accept_encoding: Option<Value<'h>>,
    sec_fetch_site: Option<Value<'h>>,
    sec_fetch_mode: Option<Value<'h>>,
    sec_fetch_dest: Option<Value<'h>>,
    sec_fetch_user: Option<Value<'h>>,
    sec_ch_ua: Option<Value<'h>>,
    sec_ch_ua_mobile: Option<Value<'h>>,
    sec_ch_ua_platform: Option<Value<'h>>,
    sec_purpose: Option<Value<'h>>,
    purpose: Option<Value<'h>>,
    dnt: Option<Value<'h>>,
    upgrade_insecure_requests: Option<Value<'h>>,
    via: Option<Value<'h>>,
}

impl<'h> Seen<'h> {
    fn new(h: &'h HeaderMap) -> Self {
        // One pass over the request's headers (a dozen, typically) instead
        // of seventeen hashed lookups; the first value of a name wins, as
        // with `HeaderMap::get`.
        let mut s = Self::default();
        for (name, value) in h {
            let slot = match name.as_str() {
                "user-agent" => &mut s.user_agent,
                "referer" => &mut s.referer,
                "accept" => &mut s.accept,
                "accept-language" => &mut s.accept_language,
                "accept-encoding" => &mut s.accept_encoding,
                "sec-fetch-site" => &mut s.sec_fetch_site,
                "sec-fetch-mode" => &mut s.sec_fetch_mode,
                "sec-fetch-dest" => &mut s.sec_fetch_dest,
                "sec-fetch-user" => &mut s.sec_fetch_user,
                "sec-ch-ua" => &mut s.sec_ch_ua,
                "sec-ch-ua-mobile" => &mut s.sec_ch_ua_mobile,
                "sec-ch-ua-platform" => &mut s.sec_ch_ua_platform,
                "sec-purpose" => &mut s.sec_purpose,
                "purpose" => &mut s.purpose,
                "dnt" => &mut s.dnt,
                "upgrade-insecure-requests" => &mut s.upgrade_insecure_requests,
                "via" => &mut s.via,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(Value::of(value));
            }
        }
        s
    }

    /// The click's evidence: every header seen, and the query, in one
    /// buffer.
    fn evidence(&self, query: Option<&str>) -> Evidence {
        use EvidenceField as F;
        let fields = [
            (F::UserAgent, self.user_agent),
            (F::Referer, self.referer),
            (F::Accept, self.accept),
            (F::AcceptLanguage, self.accept_language),
            (F::AcceptEncoding, self.accept_encoding),
            (F::SecFetchSite, self.sec_fetch_site),
            (F::SecFetchMode, self.sec_fetch_mode),
            (F::SecFetchDest, self.sec_fetch_dest),
            (F::SecFetchUser, self.sec_fetch_user),
            (F::SecChUa, self.sec_ch_ua),
            (F::SecChUaMobile, self.sec_ch_ua_mobile),
            (F::SecChUaPlatform, self.sec_ch_ua_platform),
            (F::SecPurpose, self.sec_purpose),
            (F::Purpose, self.purpose),
            (F::Dnt, self.dnt),
            (F::UpgradeInsecureRequests, self.upgrade_insecure_requests),
            (F::Via, self.via),
        ];
        let bytes = query.map_or(0, str::len)
            + fields
                .iter()
                .filter_map(|(_, v)| {
                    v.map(|v| match v {
                        Value::Text(t) => t.len(),
                        Value::Bytes(b) => b.len(),
                    })
                })
                .sum::<usize>();
        let mut e = Evidence::with_capacity(bytes.min(4 * crate::model::EVIDENCE_MAX));
        if let Some(q) = query {
            e.set(F::Query, q);
        }
        for (field, value) in fields {
            match value {
                Some(Value::Text(t)) => e.set(field, t),
                Some(Value::Bytes(b)) => e.set_bytes(field, b),
                None => {}
            }
        }
        e
    }
}

/// Formats a non-negative integer without allocating.
fn itoa(mut n: i64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: ClickId = ClickId(1);

    #[test]
    fn location_keeps_destination_and_passes_the_query_through() {
        let id = ID.to_string();
        assert_eq!(
            build_location("https://a.test/p", Some("utm_source=x&sub1=7"), ID),
            format!("https://a.test/p?utm_source=x&sub1=7&refclk={id}")
        );
        assert_eq!(
            build_location(
                "https://a.test/p?ref=1#plans",
                Some("refclk=forged&x=1"),
                ID
            ),
            format!("https://a.test/p?ref=1&x=1&refclk={id}#plans")
        );
        assert_eq!(
            build_location("https://a.test/?", None, ID),
            format!("https://a.test/?refclk={id}")
        );
    }

    /// The location as first written: `str` splitting.
    fn location_by_splitting(destination: &str, incoming: Option<&str>, id: ClickId) -> String {
        let (base, fragment) = match destination.find('#') {
            Some(i) => destination.split_at(i),
            None => (destination, ""),
        };
        let mut out = base.to_string();
        let mut sep = match base.find('?') {
            None => "?",
            Some(_) if base.ends_with('?') || base.ends_with('&') => "",
            Some(_) => "&",
        };
        for pair in incoming.unwrap_or_default().split('&') {
            let key = pair.split('=').next().unwrap_or_default();
            if pair.is_empty() || key == CLICK_PARAM {
                continue;
            }
            out.push_str(sep);
            out.push_str(pair);
            sep = "&";
        }
        format!("{out}{sep}{CLICK_PARAM}={id}{fragment}")
    }

    proptest::proptest! {
        #[test]
        fn location_by_bytes_is_location_by_splitting(
            destination in "https://a\\.test/[a-z?&=#é]{0,12}",
            incoming in proptest::option::of("(refclk|refclkx|a|é|)(=[a-z=é]{0,3})?(&{0,2}(refclk|b|)(=[a-z]{0,2})?){0,4}"),
            id in proptest::num::u128::ANY,
        ) {
            let id = ClickId(id);
            proptest::prop_assert_eq!(
                build_location(&destination, incoming.as_deref(), id),
                location_by_splitting(&destination, incoming.as_deref(), id)
            );
        }
    }

    #[test]
    fn cookie_lookup_reads_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; refedge_attr=tok.sig"),
        );
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie_value(&h, "refedge_attr"), Some("tok.sig"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "refedge"), None);
    }

    #[test]
    fn headers_are_found_in_one_pass_first_value_first() {
        let mut h = HeaderMap::new();
        h.append("user-agent", HeaderValue::from_static("Mozilla/5.0"));
        h.append("user-agent", HeaderValue::from_static("second"));
        h.append("x-other", HeaderValue::from_static("ignored"));
        h.append("via", HeaderValue::from_bytes(b"1.1 proxy \xff").unwrap());
        h.append(
            "sec-ch-ua",
            HeaderValue::from_static("\"Chromium\";v=\"131\""),
        );
        h.append("dnt", HeaderValue::from_static("\t1"));
        let seen = Seen::new(&h);
        assert_eq!(
            as_text(seen.user_agent),
            h.get("user-agent").unwrap().to_str().ok()
        );
        assert_eq!(as_text(seen.sec_ch_ua), Some("\"Chromium\";v=\"131\""));
        assert_eq!(as_text(seen.dnt), Some("\t1"));
        assert!(matches!(seen.via, Some(Value::Bytes(b"1.1 proxy \xff"))));
        assert!(seen.referer.is_none() && seen.accept.is_none());
        // Text exactly when `to_str` accepts the value.
        for b in 0u8..=255 {
            let Ok(v) = HeaderValue::from_bytes(&[b'a', b]) else {
                continue;
            };
            assert_eq!(header_text(&v), v.to_str().ok(), "byte {b:#x}");
            assert_eq!(
                matches!(Value::of(&v), Value::Text(_)),
                v.to_str().is_ok(),
                "byte {b:#x}"
            );
        }
    }

    #[test]
    fn itoa_formats() {
        assert_eq!(itoa(0, &mut [0; 20]), "0");
        assert_eq!(itoa(7_776_000, &mut [0; 20]), "7776000");
    }
}
