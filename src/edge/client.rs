//! A minimal HTTP/1.1 client for the command line (`refedge payouts`), which
//! talks to a running server: the server holds the database lock.

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
}

/// Sends `method path` with an optional JSON body; returns status and body.
pub async fn call(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let authority = base
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| ClientError::Url(base.to_string()))?;
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| ClientError::Connect(authority.to_string(), e))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid request");
    let resp = tx.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((
        status,
        resp.into_body().collect().await?.to_bytes().to_vec(),
    ))
}
