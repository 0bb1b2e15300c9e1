//! Property tests of the attribution token: every token round-trips, and no
//! single-bit change to a token is ever accepted.

use proptest::prelude::*;
use refedge::id::ClickId;
use refedge::token::{Claims, Keyring, SigningKey, TokenError};

fn keyring() -> Keyring {
    Keyring::new(vec![
        SigningKey::new(1, vec![0x11; 32], 0, false),
        SigningKey::new(2, vec![0x22; 32], 0, false),
    ])
    .unwrap()
}

prop_compose! {
    fn claims()(
        id in any::<u128>(),
        program in "[a-z0-9_-]{1,32}",
        partner in "p_[A-Za-z0-9]{1,40}",
        link in "[A-Za-z0-9_-]{3,64}",
        issued in 0i64..4_000_000_000,
        window in 1i64..400_000_000,
    ) -> Claims<'static> {
        Claims {
            click_id: ClickId(id),
            program: program.into(),
            partner_id: partner.into(),
            link: link.into(),
            issued_at: issued,
            expires_at: issued + window,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn tokens_round_trip(c in claims()) {
        let ring = keyring();
        let token = ring.sign(&c);
        prop_assert_eq!(ring.verify(&token, c.issued_at), Ok(c.clone()));
        prop_assert_eq!(ring.verify(&token, c.expires_at), Err(TokenError::Expired));
    }

    #[test]
    fn any_single_bit_flip_is_rejected(c in claims(), pos in any::<prop::sample::Index>(), bit in 0u8..7) {
        let ring = keyring();
        let token = ring.sign(&c);
        let mut bytes = token.into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // Flipping one of the low seven bits keeps the text ASCII.
        let forged = String::from_utf8(bytes).unwrap();
        prop_assert!(ring.verify(&forged, c.issued_at).is_err(), "accepted {}", forged);
    }
}
