//! `Forwarded` and `X-Forwarded-For` from a trusted proxy: any bytes give
//! the peer or an address written in them, never a panic.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (fwd, xff) = data.split_at(split);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(fwd) {
        headers.insert("forwarded", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(xff.get(1..).unwrap_or_default()) {
        headers.insert("x-forwarded-for", v);
    }
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let trusted = [
        "127.0.0.0/8".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    let ip = refedge::edge::client_ip::visitor_ip(peer, &headers, &trusted);
    let _ = ip.to_string();
});
