//! A minimal HTTP/1.1 client: the command line (`refedge payouts`) talks
//! to a running server with it (the server holds the database lock), and
//! cluster nodes to one another (forwarded ledger routes, click look-ups).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not an http://host:port URL")]
    Url(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(String),
}

/// Sends `method path` with an optional JSON body; returns status and body.
pub async fn call(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = send(base, req, Bytes::from(bytes)).await?;
    Ok((resp.status().as_u16(), resp.into_body().to_vec()))
}

/// Sends a request (method, path and headers in `req`; the `Host` header
/// is added here) to `base` (`http://host:port`) on a new connection, and
/// reads the whole answer.
pub async fn send(
    base: &str,
    req: hyper::http::request::Builder,
    body: Bytes,
) -> Result<hyper::Response<Bytes>, ClientError> {
    let authority = base
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| ClientError::Url(base.to_string()))?;
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| ClientError::Connect(authority.to_string(), e))?;
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = req
        .header("host", authority)
        .body(Full::new(body))
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let (parts, body) = tx.send_request(req).await?.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(hyper::Response::from_parts(parts, bytes))
}
