//! The device class of a click from its user agent (woothee's parser):
//! desktop, mobile, tablet, bot, or other. Analytics only; the fraud rules
//! keep their own bot patterns (`fraud::ua`).

use std::sync::OnceLock;

/// What kind of device a click came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    Other,
}

impl Device {
    /// Its name in rollups and the API.
    pub fn label(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
            Device::Bot => "bot",
            Device::Other => "other",
        }
    }
}

fn parser() -> &'static woothee::parser::Parser {
    static P: OnceLock<woothee::parser::Parser> = OnceLock::new();
    P.get_or_init(woothee::parser::Parser::new)
}

/// The class of `user_agent`. Tablets are told apart from phones by the
/// platform (iPad, Android without "Mobile", Windows tablets' "Touch").
pub fn class(user_agent: Option<&str>) -> Device {
    let Some(ua) = user_agent.filter(|u| !u.trim().is_empty()) else {
        return Device::Other;
    };
    let Some(r) = parser().parse(ua) else {
        return Device::Other;
    };
    match r.category {
        "crawler" => Device::Bot,
        "smartphone" | "mobilephone" => {
            if r.os == "iPad" || (r.os == "Android" && !ua.contains("Mobile")) {
                Device::Tablet
            } else {
                Device::Mobile
            }
        }
        "pc" => {
            if ua.contains("Tablet PC") || (ua.contains("Windows NT") && ua.contains("Touch;")) {
                Device::Tablet
            } else {
                Device::Desktop
            }
        }
        _ => Device::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_classed() {
        let cases = [
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Device::Desktop),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15", Device::Desktop),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", Device::Mobile),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36", Device::Mobile),
            ("Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", Device::Tablet),
            ("Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Device::Tablet),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Device::Bot),
        ];
        for (ua, want) in cases {
            assert_eq!(class(Some(ua)), want, "{ua}");
        }
        assert_eq!(class(None), Device::Other);
        assert_eq!(class(Some("")), Device::Other);
    }
}
