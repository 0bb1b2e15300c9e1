//! Signed deliveries: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`,
//! Stripe's scheme. refedge accepts it on its events API and on Stripe's
//! deliveries, and signs what it sends with it.

use ring::hmac;

/// A signature older or newer than this is refused (replays).
pub const TOLERANCE_S: i64 = 300;

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header must be t=<unix seconds>,v1=<hex hmac>[,v1=…]")]
    Malformed,
    #[error("the signature's timestamp is more than 5 minutes from the server's clock")]
    OutsideWindow,
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Checks `header` against `body`: its `t` within [`TOLERANCE_S`] of
/// `now_s`, and any of its `v1` signatures (a sender rolling its secret
/// signs with both) made with `secret`. Other schemes (`v0`) are ignored.
/// Compared in constant time.
pub fn verify(secret: &str, header: &str, body: &[u8], now_s: i64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.extend(crate::net::from_hex(v)),
            _ => {}
        }
    }
    let Some(t) = t else {
        return Err(SignatureError::Malformed);
    };
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_s.abs_diff(t) > TOLERANCE_S as u64 {
        return Err(SignatureError::OutsideWindow);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let msg = signed_payload(t, body);
    if sigs.iter().any(|s| hmac::verify(&key, &msg, s).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header [`verify`] accepts for `body` signed at `t` with `secret`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, &signed_payload(t, body));
    format!("t={t},v1={}", crate::net::to_hex(tag.as_ref()))
}

fn signed_payload(t: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_v1_of_a_rolling_secret_passes_and_nothing_else_does() {
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_780_000_000;
        let new = sign("whsec_new", now, body);
        let old = sign("whsec_old", now, body);
        let both = format!("{},{},v0=00", old, &new[new.find("v1=").unwrap()..]);
        assert_eq!(verify("whsec_new", &both, body, now), Ok(()));
        assert_eq!(verify("whsec_old", &both, body, now + 300), Ok(()));
        assert_eq!(
            verify("whsec_other", &both, body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_new", &new, b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_new", &new, body, now + 301),
            Err(SignatureError::OutsideWindow)
        );
        assert_eq!(
            verify("whsec_new", &new, body, now - 301),
            Err(SignatureError::OutsideWindow)
        );
        for bad in ["", "v1=00", &format!("t={now}"), "t=x,v1=zz"] {
            assert_eq!(
                verify("whsec_new", bad, body, now),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
