//! The `Cookie` header: any bytes a client sends either find the
//! attribution cookie's value inside the header or nothing.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, v.clone());
    headers.append(COOKIE, v);
    if let Some(found) = refedge::edge::redirect::cookie_value(&headers, "refedge_attr") {
        let whole = String::from_utf8_lossy(data);
        assert!(whole.contains(found), "{found:?} is not part of the header");
    }
});
