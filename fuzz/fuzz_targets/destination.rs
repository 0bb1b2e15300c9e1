//! A link destination: accepted only as an absolute http(s) URL on an
//! allowed host, and then built into a redirect location that stays there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refedge::config::Config;
use refedge::id::ClickId;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    let config = CONFIG.get_or_init(|| Config::defaults("unused"));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (dest, query) = text.split_once('\n').unwrap_or((text, ""));
    let program = &config.programs["krispcall"];
    if let Ok(clean) = refedge::directory::check_destination(dest, program) {
        let location = refedge::edge::redirect::build_location(&clean, Some(query), ClickId(42));
        let host = url::Url::parse(&clean)
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        let built = url::Url::parse(&location).expect("the location is a URL");
        assert_eq!(built.host_str(), Some(host.as_str()), "{location}");
    }
});
