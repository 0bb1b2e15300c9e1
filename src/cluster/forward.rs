//! An edge's money reads and writes go to the active calculator: the edge
//! keeps no ledger. The request is sent on as it came (method, path and
//! query, the caller's `Authorization`, the body) and the answer returned
//! as it is, with `X-Refedge-Served-By` naming the node that answered.

use crate::edge::client::send;
use crate::edge::http::{ApiError, Body};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use std::time::Duration;

/// Marks a forwarded request: it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-refedge-forwarded";
/// The node that answered a forwarded request.
pub const SERVED_BY_HEADER: &str = "x-refedge-served-by";
/// Longest a forwarded call may take (money reads may wait up to 30 s).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(40);

/// What to send on.
pub struct Forward {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub authorization: Option<HeaderValue>,
    pub content_type: Option<HeaderValue>,
    /// Other headers the handler reads (a Stripe delivery's signature).
    pub extra: Vec<(hyper::header::HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Sends `f` to the calculator at `base` (`http://host:port`).
pub async fn forward(base: &str, node: &str, f: Forward) -> Result<Response<Body>, ApiError> {
    let mut req = Request::builder()
        .method(f.method)
        .uri(&f.path)
        .header(FORWARDED_HEADER, "1");
    if let Some(a) = f.authorization {
        req = req.header(AUTHORIZATION, a);
    }
    if let Some(c) = f.content_type {
        req = req.header(CONTENT_TYPE, c);
    }
    for (name, value) in f.extra {
        req = req.header(name, value);
    }
    let unavailable = |why: String| {
        ApiError::Unavailable(format!("the active calculator {node} at {base}: {why}"))
    };
    let answer = tokio::time::timeout(FORWARD_TIMEOUT, send(base, req, f.body))
        .await
        .map_err(|_| unavailable("no answer in time".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let (parts, bytes) = answer.into_parts();
    let mut out = Response::new(Full::new(bytes));
    *out.status_mut() = parts.status;
    for (name, value) in parts.headers.iter() {
        if matches!(
            name.as_str(),
            "content-type" | "content-disposition" | "cache-control" | "retry-after"
        ) {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(node) {
        out.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    Ok(out)
}
