//! Money: exact decimals, cents rounding written out, and serde helpers that
//! refuse floats.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer};

/// Rounds to cents, half away from zero: the one rounding every ledger
/// amount goes through.
pub fn cents(d: Decimal) -> Decimal {
    let mut r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r
}

/// Serde: money as a string with (at least) cents: `"9.00"`, never `"9"`.
pub fn ser_money<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let mut v = *d;
    if v.scale() < 2 {
        v.rescale(2);
    }
    s.collect_str(&v)
}

/// `base × percent / 100`, rounded to cents.
pub fn percent_of(base: Decimal, percent: Decimal) -> Decimal {
    cents(base * percent / Decimal::ONE_HUNDRED)
}

/// Parses a decimal amount string such as `"40.00"`.
pub fn parse_amount(s: &str) -> Result<Decimal, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || b == b'.' || (i == 0 && b == b'-'));
    if !ok {
        return Err(format!("{s:?} is not a decimal amount like \"40.00\""));
    }
    let d: Decimal = s
        .parse()
        .map_err(|_| format!("{s:?} is not a decimal amount like \"40.00\""))?;
    if d.scale() > 4 {
        return Err("has more than 4 decimal places".into());
    }
    Ok(d)
}

/// Serde: a decimal given as a JSON string; numbers are refused so that no
/// amount ever passes through a float.
pub fn decimal_str<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_amount(&s).map_err(serde::de::Error::custom),
        Raw::Number(n) => Err(serde::de::Error::custom(format!(
            "amounts are decimal strings (\"{n}\"), not JSON numbers"
        ))),
    }
}

/// Serde for configuration: a decimal as a string or an integer (TOML has
/// no exact decimal type; floats are refused).
pub fn decimal_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(i64),
        Float(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_amount(&s).map_err(serde::de::Error::custom),
        Raw::Int(i) => Ok(Decimal::from(i)),
        Raw::Float(f) => Err(serde::de::Error::custom(format!(
            "write decimals as strings (\"{f}\"), not floats"
        ))),
    }
}

/// [`decimal_lenient`] for optional settings.
pub fn decimal_lenient_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    decimal_lenient(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros_free::dec;

    mod rust_decimal_macros_free {
        macro_rules! dec {
            ($s:literal) => {
                $s.parse::<rust_decimal::Decimal>().unwrap()
            };
        }
        pub(crate) use dec;
    }

    #[test]
    fn rounding_is_half_away_from_zero_to_cents() {
        assert_eq!(cents(dec!("0.125")), dec!("0.13"));
        assert_eq!(cents(dec!("-0.125")), dec!("-0.13"));
        assert_eq!(cents(dec!("0.124")), dec!("0.12"));
        assert_eq!(percent_of(dec!("15.00"), dec!("30")), dec!("4.50"));
        assert_eq!(percent_of(dec!("33.33"), dec!("20")), dec!("6.67"));
    }

    #[test]
    fn amounts_parse_strictly() {
        assert_eq!(parse_amount("40.00").unwrap(), dec!("40"));
        assert!(parse_amount("4e1").is_err());
        assert!(parse_amount("1.23456").is_err());
        assert!(parse_amount(" ").is_err());
        assert!(parse_amount("NaN").is_err());
        let v: Result<Decimal, _> = decimal_str(&mut serde_json::Deserializer::from_str("40.5"));
        assert!(v.unwrap_err().to_string().contains("decimal strings"));
    }
}
