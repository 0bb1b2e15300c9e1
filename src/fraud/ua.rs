//! The user-agent classifier: `bot` or `human`, from the string alone.
//!
//! Real browsers all send `Mozilla/5.0 (…)`; crawlers, link-preview
//! fetchers, monitors, HTTP libraries and headless browsers give themselves
//! away with a token (`bot`, `crawl`, `python-requests`, `HeadlessChrome`…),
//! a contact URL, or a `compatible;` product that is not Internet Explorer.
//! One precompiled case-insensitive Aho-Corasick automaton scans the string
//! once; nothing is allocated.

use aho_corasick::AhoCorasick;
use std::sync::LazyLock;

/// Tokens that only automated clients put in a user agent.
const BOT_TOKENS: &[&str] = &[
    // generic
    "bot",
    "crawl",
    "spider",
    "slurp",
    "scrap",
    "fetch",
    "preview",
    "archiv",
    "index",
    "monitor",
    "uptime",
    "checker",
    "validator",
    "scanner",
    "probe",
    "headless",
    "phantomjs",
    "selenium",
    "webdriver",
    "puppeteer",
    "playwright",
    "lighthouse",
    "pagespeed",
    "gtmetrix",
    "http_request",
    "httpclient",
    "http-client",
    "http client",
    "urllib",
    "libwww",
    // libraries and tools
    "python",
    "curl",
    "wget",
    "okhttp",
    "go-http",
    "java/",
    "axios",
    "node-fetch",
    "undici",
    "got (",
    "postman",
    "insomnia",
    "httpie",
    "aiohttp",
    "requests/",
    "scrapy",
    "nutch",
    "reqwest",
    "hyper/",
    "guzzle",
    "ruby",
    "perl",
    "php/",
    "winhttp",
    "fasthttp",
    "restsharp",
    "dart:io",
    "cfnetwork/",
    "dalvik/",
    "apache-",
    "jakarta",
    "feedparser",
    "rss",
    "feed",
    "zgrab",
    "masscan",
    "nmap",
    "nikto",
    "sqlmap",
    "httrack",
    "wordpress",
    "jetty",
    "synapse",
    // named crawlers and fetchers (by the crawler's own name: browsers
    // such as DuckDuckGo, Coc Coc, Sogou, Yandex or Baidu's app share the
    // company's name, and in-app browsers carry the app's)
    "facebookexternalhit",
    "facebookcatalog",
    "meta-externalagent",
    "whatsapp/",
    "telegrambot",
    "slackbot",
    "slack-imgproxy",
    "discordbot",
    "skypeuripreview",
    "embedly",
    "quora link",
    "pinterestbot",
    "tumblr/",
    "vkshare",
    // Google's fetchers all name themselves Google-Something
    // (InspectionTool, Read-Aloud, Site-Verification, Extended, Safety,
    // PhysicalWeb, CloudVertexBot…); its browsers and apps never do.
    "google-",
    "google favicon",
    "googleother",
    "mediapartners",
    "adsbot",
    "apis-google",
    "feedfetcher",
    "yandexbot",
    "yandexmetrika",
    "yandeximages",
    "baiduspider",
    "duckduckbot",
    "duckassistbot",
    "qwantify",
    "petalbot",
    "bytespider",
    "gptbot",
    "chatgpt-user",
    "oai-searchbot",
    "claudebot",
    "claude-web",
    "anthropic-ai",
    "perplexitybot",
    "perplexity-user",
    "ccbot",
    "cohere-ai",
    "amazonbot",
    "applebot",
    "semrush",
    "ahrefs",
    "mj12",
    "dotbot",
    "seznambot",
    "sogou web",
    "sogou spider",
    "exabot",
    "ia_archiver",
    "bingpreview",
    "ask jeeves",
    "teoma",
    "yeti/",
    "daumoa",
    "coccocbot",
    "mail.ru_bot",
    "proximic",
    "grapeshot",
    "admantx",
    "ltx71",
    "cloudflare-",
    "datadog",
    "newrelic",
    "pingdom",
    "statuscake",
    "site24x7",
    "uptimerobot",
    "nagios",
    "zabbix",
    "prtg",
    "screenshot",
    "prerender",
    "thumbnail",
    "httpunit",
    "biglotron",
    "gigablast",
    // audit tools that append their name to a real browser's user agent
    "dareboost",
    "siteimprove",
    "linkcheck",
    "ptst/",
    "chrome-lighthouse",
    "speedcurve",
    // crawlers that put their name in an otherwise browser-like string
    "ips-agent",
    "appinsights",
    "outbrain",
    "(java)",
    "datanyze",
    "ttd-content",
];

/// Browsers whose names contain a bot token (`CUBOT` phones).
const HUMAN_EXCEPTIONS: &[&str] = &["cubot"];

/// Contact addresses: browsers never carry one.
const MARKERS: &[&str] = &["http://", "https://", "www.", "+http", ".com/", "@"];

const COMPATIBLE: &str = "compatible;";

/// What a pattern of the one automaton means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Token,
    Exception,
    Marker,
    Compatible,
}

struct Classifier {
    automaton: AhoCorasick,
    kinds: Vec<Kind>,
}

static CLASSIFIER: LazyLock<Classifier> = LazyLock::new(|| {
    let mut patterns: Vec<&str> = Vec::new();
    let mut kinds = Vec::new();
    for (list, kind) in [
        (BOT_TOKENS, Kind::Token),
        (HUMAN_EXCEPTIONS, Kind::Exception),
        (MARKERS, Kind::Marker),
        (&[COMPATIBLE][..], Kind::Compatible),
    ] {
        patterns.extend_from_slice(list);
        kinds.extend(std::iter::repeat_n(kind, list.len()));
    }
    let automaton = AhoCorasick::builder()
        .ascii_case_insensitive(true)
        // A full DFA: one table lookup per byte (the pattern list is small).
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build(&patterns)
        .expect("patterns compile");
    Classifier { automaton, kinds }
});

/// Why a user agent is not a person's browser; `None` if it looks like one.
/// One pass of one automaton finds tokens, exceptions, contact markers and
/// `compatible;` together.
pub fn bot_reason(ua: &str) -> Option<String> {
    let ua = ua.trim();
    if ua.is_empty() {
        return Some("empty user-agent".into());
    }
    if ua.len() < 25 {
        return Some(format!("user-agent {ua:?} is too short for a browser"));
    }
    if let Some(why) = unlike_a_browser(ua) {
        return Some(why.into());
    }
    let c = &*CLASSIFIER;
    let mut exceptions = [(0usize, 0usize); 2];
    let mut n_exc = 0;
    let mut token = None;
    let mut marker = None;
    let mut compatible = None;
    for m in c.automaton.find_overlapping_iter(ua) {
        match c.kinds[m.pattern().as_usize()] {
            Kind::Exception if n_exc < exceptions.len() => {
                exceptions[n_exc] = (m.start(), m.end());
                n_exc += 1;
            }
            Kind::Token if token.is_none() => token = Some((m.start(), m.end())),
            Kind::Token => {}
            Kind::Marker if marker.is_none() => marker = Some((m.start(), m.end())),
            Kind::Compatible if compatible.is_none() => compatible = Some(m.start()),
            _ => {}
        }
    }
    // A token inside an exception (CUBOT) does not count; look for another.
    if let Some((s, e)) = token {
        let excepted = exceptions[..n_exc]
            .iter()
            .any(|&(xs, xe)| s >= xs && e <= xe);
        if !excepted {
            return Some(format!("user-agent contains {:?}", &ua[s..e]));
        }
        for m in c.automaton.find_overlapping_iter(ua) {
            if c.kinds[m.pattern().as_usize()] == Kind::Token
                && !exceptions[..n_exc]
                    .iter()
                    .any(|&(xs, xe)| m.start() >= xs && m.end() <= xe)
            {
                return Some(format!("user-agent contains {:?}", &ua[m.start()..m.end()]));
            }
        }
    }
    if let Some((s, e)) = marker {
        return Some(format!(
            "user-agent carries a contact address ({})",
            &ua[s..e]
        ));
    }
    if let Some(i) = compatible {
        let rest = &ua[i..];
        if !(rest.contains("MSIE") || rest.contains("Trident")) {
            return Some("user-agent is a compatible; product that is not a browser".into());
        }
    }
    None
}

/// Why a user agent's leading product is not one a browser in use sends.
///
/// Every browser in use sends `Mozilla/5.0 (…)`, except two older families
/// that still have real users: Presto-era Opera (`Opera/9.80`, which Opera
/// Mini still sends) and Internet Explorer 7 and 8 (`Mozilla/4.0
/// (compatible; MSIE 8.0; …; Trident/4.0…)`). Other `Mozilla/4` and older
/// strings, and anything else, are scripts and crawlers.
fn unlike_a_browser(ua: &str) -> Option<&'static str> {
    let starts = |p: &str| ua.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p));
    if starts("mozilla/5") || starts("opera/9.80 (") {
        return None;
    }
    if starts("mozilla/4.0 (compatible; msie ") && ua.contains("Trident/") {
        return None;
    }
    if starts("mozilla/") {
        Some("user-agent claims a Mozilla version no browser in use sends")
    } else {
        Some("user-agent does not start with Mozilla/")
    }
}

/// `true` for a bot.
pub fn is_bot(ua: &str) -> bool {
    bot_reason(ua).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_human() {
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
            // Browsers and in-app browsers named like a crawler's company.
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/130.0.234 Chrome/124.0.6367.234 Safari/537.36",
            "Mozilla/5.0 (Linux; Android 13; V2154A) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/97.0.4692.98 Mobile Safari/537.36 T7/13.52 BDOS/1.0 (HarmonyOS 2.2.0) SP-engine/2.90.0 baiduboxapp/13.52.0.10 (Baidu; P1 13)",
            "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 Mobile Safari/537.36 Telegram-Android/11.5.3 (Samsung SM-S918B; Android 14; SDK 34; HIGH)",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/22B83 [FBAN/FBIOS;FBAV/490.0.0.30.106;FBBV/666238461;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/18.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/0]",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/22B83 Instagram 355.0.0.26.108 (iPhone15,2; iOS 18_1; en_US; en; scale=3.00; 1179x2556; 653463009)",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.41.105 Chrome/130.0.6723.118 Electron/33.2.0 Safari/537.36 Sonic Slack_SSB/4.41.105",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) discord/1.0.9170 Chrome/128.0.6613.186 Electron/32.2.2 Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
            "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
            "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/86.0.4240.198 Safari/537.36 SE 2.X MetaSr 1.0",
            // Opera Mini (Presto) and Internet Explorer 8 still have people.
            "Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 Version/12.16",
            "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0; SLCC2; .NET CLR 2.0.50727)",
            // Electron apps and Android web views.
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) obsidian/1.6.5 Chrome/124.0.6367.243 Electron/30.1.2 Safari/537.36",
            "Mozilla/5.0 (Linux; Android 12; Redmi Note 9 Pro Build/SKQ1.211019.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.134 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 8.0; Pixel 2 Build/OPD3.170816.012) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        ] {
            assert_eq!(bot_reason(ua), None, "{ua}");
        }
    }

    #[test]
    fn automated_clients_are_bots() {
        for ua in [
            "",
            "curl/8.5.0",
            "python-requests/2.32.3",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "TelegramBot (like TwitterBot)",
            "WhatsApp/2.23.20.0",
            "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
            "Go-http-client/1.1",
            "okhttp/4.12.0",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            "AdsBot-Google (+http://www.google.com/adsbot.html)",
            "Feedfetcher-Google; (+http://www.google.com/feedfetcher.html; 1 subscribers; feed-id=728742641706423)",
            "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
            "Wget/1.20.3 (linux-gnu)",
            "httpunit/1.x",
            "Mozilla/5.0 (Windows; U; Windows NT 5.1; en-US) Speedy Spider (http://www.entireweb.com/about/search_tech/speedy_spider/)",
            "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 13_2_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.3 Mobile/15E148 Safari/604.1 (compatible; YandexMobileBot/3.0; +http://yandex.com/bots)",
            "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36; compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 (compatible; Google-Read-Aloud; +https://support.google.com/webmasters/answer/1061943)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/62.0.3202.75 Safari/537.36 DareBoost",
            "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 5.0) LinkCheck by Siteimprove.com",
            "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0) SiteCheck-sitecrawl by Siteimprove.com",
            // Browser-like strings whose only tell is the crawler's name.
            "Mozilla/5.0 (X11; U; Linux i686; en-US; rv:1.9.2.24; ips-agent) Gecko/20111107 Ubuntu/10.04 (lucid) Firefox/3.6.24",
            "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0; AppInsights)",
            "Mozilla/5.0 (Java) outbrain",
            "Mozilla/5.0 (Google-PhysicalWeb)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/49.0.2623.75 Safari/537.36 Google Favicon",
            "Mozilla/5.0 (X11; Datanyze; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/65.0.3325.181 Safari/537.36",
            // Old products no browser in use sends; scripts fake them.
            "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)",
            "Mozilla/4.5 (compatible; HTTrack 3.0x; Windows 98)",
            "Opera/9.00 (Windows NT 5.1; U; en)",
        ] {
            assert!(is_bot(ua), "{ua:?} passed as human");
        }
    }
}
