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
    // named crawlers and fetchers without "bot" in the name
    "facebookexternalhit",
    "facebookcatalog",
    "meta-externalagent",
    "whatsapp",
    "telegram",
    "slack",
    "discord",
    "skype",
    "embedly",
    "quora link",
    "pinterest",
    "tumblr",
    "vkshare",
    "google-",
    "googleother",
    "mediapartners",
    "adsbot",
    "apis-google",
    "feedfetcher",
    "yandex",
    "baidu",
    "duckduck",
    "qwant",
    "petal",
    "bytespider",
    "gptbot",
    "chatgpt",
    "claude",
    "anthropic",
    "perplexity",
    "ccbot",
    "cohere",
    "amazonbot",
    "applebot",
    "semrush",
    "ahrefs",
    "mj12",
    "dotbot",
    "seznam",
    "sogou",
    "exabot",
    "ia_archiver",
    "bingpreview",
    "ask jeeves",
    "teoma",
    "yeti/",
    "daum",
    "coccoc",
    "mail.ru_bot",
    "proximic",
    "grapeshot",
    "admantx",
    "ltx71",
    "cloudflare",
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
    "snapshot",
    "render",
    "prerender",
    "capture",
    "thumbnail",
];

/// Browsers whose names contain a bot token (`CUBOT` phones).
const HUMAN_EXCEPTIONS: &[&str] = &["cubot"];

static BOT: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(BOT_TOKENS)
        .expect("tokens compile")
});

static EXCEPT: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(HUMAN_EXCEPTIONS)
        .expect("tokens compile")
});

/// Why a user agent is not a person's browser; `None` if it looks like one.
pub fn bot_reason(ua: &str) -> Option<String> {
    let ua = ua.trim();
    if ua.is_empty() {
        return Some("empty user-agent".into());
    }
    if ua.len() < 25 {
        return Some(format!("user-agent {ua:?} is too short for a browser"));
    }
    if !ua
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("mozilla/"))
    {
        return Some("user-agent does not start with Mozilla/".into());
    }
    let excepted: Vec<(usize, usize)> =
        EXCEPT.find_iter(ua).map(|m| (m.start(), m.end())).collect();
    for m in BOT.find_iter(ua) {
        if excepted
            .iter()
            .any(|&(s, e)| m.start() >= s && m.end() <= e)
        {
            continue;
        }
        return Some(format!("user-agent contains {:?}", &ua[m.start()..m.end()]));
    }
    for marker in ["http://", "https://", "www.", "+http", ".com/", "@"] {
        if ua.contains(marker) {
            return Some(format!("user-agent carries a contact address ({marker})"));
        }
    }
    if let Some(i) = ua.find("compatible;") {
        let rest = &ua[i..];
        if !(rest.contains("MSIE") || rest.contains("Trident")) {
            return Some("user-agent is a compatible; product that is not a browser".into());
        }
    }
    None
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
            "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)",
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
        ] {
            assert!(is_bot(ua), "{ua:?} passed as human");
        }
    }
}
