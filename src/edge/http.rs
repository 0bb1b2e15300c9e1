//! HTTP plumbing shared by the handlers: the API error type (one `match`
//! maps it to a status), JSON bodies in and out, query strings.

use crate::directory::DirectoryError;
use crate::store::StoreError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Seconds a client is asked to wait after a 503 (store not writable).
pub const RETRY_AFTER_S: &str = "5";

/// Response body type used everywhere.
pub type Body = Full<Bytes>;

/// An API request's body: from the socket, or built in the process (the
/// console and portal call the API as their signed-in principal).
pub type ApiBody = http_body_util::Either<Incoming, Full<Bytes>>;

/// An API request.
pub type ApiRequest = Request<ApiBody>;

/// Everything an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A field is missing, of the wrong type, unknown, or has a bad value.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A request that cannot be read at all (a signature, a version), with
    /// the header or field at fault: 400.
    #[error("{field}: {reason}")]
    BadRequest { field: String, reason: String },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A valid key whose role may not use this route.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("content type must be application/json, not {0:?}")]
    UnsupportedMediaType(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The store cannot make writes durable now (disk full, I/O error):
    /// nothing was acknowledged; retry after a few seconds.
    #[error("{0}; nothing was recorded, retry shortly")]
    Unavailable(String),
    /// A wait ran out: the request is fine, the answer was not ready.
    #[error("{0}")]
    Timeout(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A bad value in a named field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON error response. Server faults are logged; client mistakes
    /// are not errors of ours and are not logged as such.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let field = match &self {
            Self::Invalid { field, .. } | Self::BadRequest { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let message = match &self {
            Self::Invalid { reason, .. } | Self::BadRequest { reason, .. } => reason.clone(),
            Self::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                self.to_string()
            }
            Self::Unavailable(detail) => {
                tracing::warn!(%detail, "a durable write failed; answered 503");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut resp = json(
            status,
            &ErrorBody {
                error: &message,
                field,
            },
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_S));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Invalid { field, reason } => Self::invalid(field, reason),
            DirectoryError::NotFound(what) => Self::NotFound(what),
            DirectoryError::CodeTaken(code) => {
                Self::Conflict(format!("link code {code:?} is already taken"))
            }
            DirectoryError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_io() {
            Self::Unavailable(format!("the store cannot write: {e}"))
        } else {
            Self::Internal(e.to_string())
        }
    }
}

/// Runs blocking work (sled I/O, fsync) off the request task.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("responses serialise");
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    text_bytes(status, Bytes::from_static(body.as_bytes()))
}

/// A plain-text response built at run time.
pub fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    text_bytes(status, Bytes::from(body))
}

fn text_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Reads a body of at most `limit` bytes; the content type, if given, must
/// be JSON.
pub async fn read_body(req: ApiRequest, limit: usize) -> Result<bytes::Bytes, ApiError> {
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(ApiError::UnsupportedMediaType(ct));
        }
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::TooLarge(limit)
            } else {
                ApiError::MalformedJson(format!("could not read body: {e}"))
            }
        })
}

/// Reads a JSON body of at most `limit` bytes into `T`, naming the field at
/// fault when it does not fit.
pub async fn read_json<T: DeserializeOwned>(req: ApiRequest, limit: usize) -> Result<T, ApiError> {
    parse_json(&read_body(req, limit).await?)
}

/// Parses JSON into `T` strictly (see [`crate::json::parse_strict`]);
/// syntax errors are 400, shape errors 422 naming the field
/// (`customer.email`, `lines[2].amount`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value = parse_value(body)?;
    crate::json::decode(crate::json::Strict(value)).map_err(field_error)
}

/// Parses a body strictly into a JSON value.
pub fn parse_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    crate::json::parse_strict(body).map_err(field_error)
}

fn field_error(e: Result<crate::json::FieldError, String>) -> ApiError {
    match e {
        Ok(f) => ApiError::Invalid {
            field: if f.field.is_empty() {
                ".".into()
            } else {
                f.field
            },
            reason: f.reason,
        },
        Err(syntax) => ApiError::MalformedJson(syntax),
    }
}

/// A query time: RFC 3339, or a `YYYY-MM-DD` date meaning its midnight UTC.
pub fn parse_time(field: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    crate::commission::event::parse_instant(v)
        .ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 time or a YYYY-MM-DD date"))
}

/// [`parse_time`] as epoch milliseconds.
pub fn parse_time_ms(field: &str, v: &str) -> Result<i64, ApiError> {
    parse_time(field, v).map(|t| t.timestamp_millis())
}

/// A page size: 1 to 1000.
pub fn parse_limit(v: &str) -> Result<usize, ApiError> {
    v.parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| ApiError::invalid("limit", "must be a whole number from 1 to 1000"))
}

/// A paging cursor: a click id.
pub fn parse_cursor(v: &str) -> Result<crate::id::ClickId, ApiError> {
    v.parse()
        .map_err(|e| ApiError::invalid("cursor", format!("is not a click id: {e}")))
}

/// Refuses a query parameter not in `allowed`, naming it.
pub fn only_params(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(ApiError::invalid(
            k.as_str(),
            format!("unknown parameter; use {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Query string pairs, decoded.
pub fn query_pairs(req: &ApiRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn field(body: &str) -> (StatusCode, Option<String>) {
        match parse_json::<Outer>(body.as_bytes()) {
            Ok(_) => (StatusCode::OK, None),
            Err(e) => {
                let f = match &e {
                    ApiError::Invalid { field, .. } => Some(field.clone()),
                    _ => None,
                };
                (e.status(), f)
            }
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field("{"), (StatusCode::BAD_REQUEST, None));
        assert_eq!(
            field(r#"{"inner":{"count":1}}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("name".into()))
        );
        assert_eq!(
            field(r#"{"name":"x","inner":{"count":"1"}}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("inner.count".into()))
        );
        assert_eq!(
            field(r#"{"name":"x","inner":{"count":1,"extra":2}}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("inner.extra".into()))
        );
        assert_eq!(
            field(r#"{"name":"x","inner":{"count":1}}"#),
            (StatusCode::OK, None)
        );
    }
}
