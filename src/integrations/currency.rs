//! Amounts in a currency's smallest unit (Stripe's integers) as decimals:
//! the number of decimals is the currency's own (ISO 4217 minor unit, as
//! Stripe applies it), never assumed to be two.

use rust_decimal::Decimal;

/// Currencies without a minor unit: an amount is whole units (Stripe's
/// zero-decimal currencies).
const ZERO: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

/// Currencies with thousandths (Stripe's three-decimal currencies).
const THREE: &[&str] = &["BHD", "JOD", "KWD", "OMR", "TND"];

/// Decimals of `currency` (ISO code, any case).
pub fn exponent(currency: &str) -> u32 {
    let c = currency.to_ascii_uppercase();
    if ZERO.contains(&c.as_str()) {
        0
    } else if THREE.contains(&c.as_str()) {
        3
    } else {
        2
    }
}

/// An integer amount in minor units as a decimal amount.
pub fn from_minor(minor: i64, currency: &str) -> Decimal {
    Decimal::new(minor, exponent(currency))
}

/// A decimal string in minor units (Stripe's `unit_amount_decimal`, which
/// may hold fractions of the minor unit, such as `"0.5"`) as a decimal
/// amount; `None` if it is not a decimal number.
pub fn from_minor_str(minor: &str, currency: &str) -> Option<Decimal> {
    let d: Decimal = minor.trim().parse().ok()?;
    let mut out = d.checked_div(Decimal::from(10u64.pow(exponent(currency))))?;
    out.rescale(out.scale().max(exponent(currency)));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_follow_each_currency() {
        assert_eq!(from_minor(2990, "usd").to_string(), "29.90");
        assert_eq!(from_minor(1500, "JPY").to_string(), "1500");
        assert_eq!(from_minor(50000, "krw").to_string(), "50000");
        assert_eq!(from_minor(12345, "bhd").to_string(), "12.345");
        assert_eq!(from_minor(1000, "KWD").to_string(), "1.000");
        assert_eq!(from_minor(1000, "JOD").to_string(), "1.000");
        assert_eq!(from_minor(-250, "eur").to_string(), "-2.50");
        assert_eq!(from_minor_str("2990", "usd").unwrap().to_string(), "29.90");
        assert_eq!(from_minor_str("0.5", "usd").unwrap().to_string(), "0.005");
        assert_eq!(from_minor_str("1500", "jpy").unwrap().to_string(), "1500");
        assert_eq!(from_minor_str("12", "bhd").unwrap().to_string(), "0.012");
        assert_eq!(from_minor_str("x", "usd"), None);
    }
}
