//! Partners' postback URL templates: the macros they may use, the values
//! (URL-encoded) put in their place, and which targets a template may
//! name.
//!
//! Macros: `{refclk}` (the click id), `{sub1}`…`{sub5}` (those query
//! parameters of the partner's tracked click), `{event}`, `{amount}` and
//! `{currency}` (the commission), `{sale_amount}` (what of the invoice the
//! commission is figured on), `{customer_ref}` (an opaque reference, the
//! same for the same customer and partner; never the merchant's customer
//! id or e-mail). A macro without a value is left empty.

use rust_decimal::Decimal;
use std::net::IpAddr;

/// The macros a template may use.
pub const MACROS: &[&str] = &[
    "refclk",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "event",
    "amount",
    "currency",
    "sale_amount",
    "customer_ref",
];

/// Longest template accepted.
pub const MAX_TEMPLATE: usize = 2048;

/// What the macros are filled with.
#[derive(Debug, Clone, Default)]
pub struct Values {
    pub refclk: Option<String>,
    /// The click's query string, where `sub1`…`sub5` come from.
    pub query: Option<String>,
    pub event: &'static str,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    pub sale_amount: Option<Decimal>,
    pub customer_ref: Option<String>,
}

impl Values {
    fn get(&self, name: &str) -> Option<String> {
        match name {
            "refclk" => self.refclk.clone(),
            "event" => Some(self.event.to_string()),
            "amount" => self.amount.map(|a| a.to_string()),
            "currency" => self.currency.clone(),
            "sale_amount" => self.sale_amount.map(|a| a.to_string()),
            "customer_ref" => self.customer_ref.clone(),
            sub => {
                let q = self.query.as_deref()?;
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == sub)
                    .map(|(_, v)| v.into_owned())
            }
        }
    }
}

/// The template with each macro replaced by its URL-encoded value.
pub fn render(template: &str, v: &Values) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if MACROS.contains(&&after[..close]) => {
                let value = v.get(&after[..close]).unwrap_or_default();
                out.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks a template: an absolute http(s) URL once its macros are filled,
/// only known macros, and — unless `allow_private` — a host that is not
/// loopback, link-local or a private range (by name or address). The
/// error says why.
pub fn check(template: &str, allow_private: bool) -> Result<url::Url, String> {
    if template.len() > MAX_TEMPLATE {
        return Err(format!("must be at most {MAX_TEMPLATE} characters"));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has a { without its }")?;
        let name = &after[..close];
        if !MACROS.contains(&name) {
            return Err(format!(
                "{{{name}}} is not a macro (use {})",
                MACROS
                    .iter()
                    .map(|m| format!("{{{m}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    let sample = render(
        template,
        &Values {
            refclk: Some("x".into()),
            event: "commission.created",
            ..Values::default()
        },
    );
    let url = url::Url::parse(&sample).map_err(|e| format!("is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{}: is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if allow_private {
        return Ok(url);
    }
    match url.host() {
        None => Err("has no host".into()),
        Some(url::Host::Ipv4(ip)) if super::send::is_private(IpAddr::V4(ip)) => {
            Err(format!("{ip} is a loopback, link-local or private address"))
        }
        Some(url::Host::Ipv6(ip)) if super::send::is_private(IpAddr::V6(ip)) => {
            Err(format!("{ip} is a loopback, link-local or private address"))
        }
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let internal = d == "localhost"
                || d.ends_with(".localhost")
                || d.ends_with(".local")
                || d.ends_with(".internal")
                || !d.contains('.');
            if internal {
                Err(format!("{d} is not a public host name"))
            } else {
                Ok(url)
            }
        }
        Some(_) => Ok(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_are_filled_url_encoded_and_unknown_braces_kept() {
        let v = Values {
            refclk: Some("01JCLICK".into()),
            query: Some("sub1=aff%2042&sub3=x&y=z".into()),
            event: "commission.created",
            amount: Some("9.00".parse().unwrap()),
            currency: Some("USD".into()),
            sale_amount: Some("30.00".parse().unwrap()),
            customer_ref: Some("cr_0a1b".into()),
        };
        let t = "https://t.example/pb?c={refclk}&s1={sub1}&s2={sub2}&s3={sub3}&e={event}&a={amount}&cur={currency}&sale={sale_amount}&r={customer_ref}&x={other}";
        assert_eq!(
            render(t, &v),
            "https://t.example/pb?c=01JCLICK&s1=aff+42&s2=&s3=x&e=commission.created&a=9.00&cur=USD&sale=30.00&r=cr_0a1b&x={other}"
        );
        let evil = Values {
            refclk: Some("a&b=c#d".into()),
            ..v
        };
        assert_eq!(
            render("https://t.example/?c={refclk}", &evil),
            "https://t.example/?c=a%26b%3Dc%23d"
        );
    }

    #[test]
    fn templates_may_name_only_public_http_hosts() {
        assert!(check(
            "https://track.partner.example/pb?c={refclk}&a={amount}",
            false
        )
        .is_ok());
        for (t, why) in [
            ("http://127.0.0.1/pb", "loopback"),
            ("http://10.0.0.8:8080/pb", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://[::1]/pb", "loopback"),
            ("http://localhost:9000/pb", "public host"),
            ("http://metadata.google.internal/", "public host"),
            ("ftp://files.example/pb", "http or https"),
            ("https://t.example/pb?c={click}", "not a macro"),
            ("https://user:pw@t.example/", "password"),
            ("/relative/{refclk}", "absolute"),
        ] {
            let err = check(t, false).unwrap_err();
            assert!(err.contains(why), "{t}: {err}");
        }
        assert!(check("http://127.0.0.1:9/pb?c={refclk}", true).is_ok());
    }
}
