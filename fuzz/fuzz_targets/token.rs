//! The attribution token from a `Cookie` or a signup: any string verifies
//! or is refused, never panics; what verifies signs back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refedge::token::{Keyring, SigningKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ring = Keyring::new(vec![
        SigningKey::new(1, vec![7; 32], 0, false),
        SigningKey::new(2, vec![9; 32], 0, false),
    ])
    .expect("two keys");
    if let Ok(claims) = ring.verify(text, 1_800_000_000) {
        let again = ring.sign(&claims);
        assert!(ring.verify(&again, 1_800_000_000).is_ok());
    }
});
