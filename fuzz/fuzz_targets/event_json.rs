//! Merchant event JSON: strict parsing, the event's own checks, and then
//! the calculator itself. Anything the checks accept must apply without a
//! panic (the bounds are chosen for that).
#![no_main]

use libfuzzer_sys::fuzz_target;
use refedge::commission::{Calculator, Event};
use refedge::config::Config;
use std::sync::OnceLock;

fn calculator() -> &'static Calculator {
    static CALC: OnceLock<Calculator> = OnceLock::new();
    CALC.get_or_init(|| {
        let c = Config::defaults("unused");
        let mut calc = Calculator::new(refedge::replay::books(&c.programs));
        // A partner with a referred customer, so payments reach the money.
        for line in [
            r#"{"type":"partner","id":"p1","program":"krispcall","email":"a@b.example"}"#,
            r#"{"type":"coupon","code":"C1","partner_id":"p1"}"#,
            r#"{"type":"signup","id":"s1","program":"krispcall","occurred_at":"2026-01-01T00:00:00Z","customer":{"id":"c1"},"attribution":{"coupon":"C1"}}"#,
            r#"{"type":"fx_rates","at":"2026-01-01T00:00:00Z","base":"USD","rates":{"EUR":"0.9"}}"#,
        ] {
            let v = refedge::json::parse_strict(line.as_bytes()).unwrap();
            let e = Event::from_value(v).unwrap();
            calc.apply("setup", &e);
        }
        calc
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = refedge::json::parse_strict(data) else {
        return;
    };
    let items = match value {
        serde_json::Value::Array(items) => items,
        v => vec![v],
    };
    let mut calc = calculator().clone();
    for item in items.into_iter().take(8) {
        if let Ok(event) = Event::from_value(item) {
            calc.apply("fuzz", &event);
        }
    }
});
