//! The bot classifier on a public corpus (tests/fixtures/ua-corpus, see
//! its SOURCES.md): at most 0.5% of real browsers flagged, at least 99% of
//! crawlers caught, and Android's Dalvik app clients flagged by default.
//! `cargo test --test ua_corpus -- --nocapture` prints the rates.

use refedge::fraud::ua::{classify, Class};

fn lines(name: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/fixtures/ua-corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// (flagged, total, some flagged examples with why).
fn flagged(name: &str) -> (usize, usize, Vec<String>) {
    let all = lines(name);
    let mut examples = Vec::new();
    let mut n = 0;
    for ua in &all {
        let why = match classify(ua) {
            Class::Human => continue,
            Class::AppClient(w) | Class::Bot(w) => w,
        };
        n += 1;
        if examples.len() < 25 {
            examples.push(format!("{why}: {ua}"));
        }
    }
    (n, all.len(), examples)
}

fn percent(n: usize, of: usize) -> f64 {
    n as f64 * 100.0 / of as f64
}

#[test]
fn real_browsers_are_people_and_crawlers_are_caught() {
    let (fb, browsers, examples) = flagged("browsers.txt");
    let (fc, crawlers, _) = flagged("crawlers.txt");
    let missed: Vec<String> = lines("crawlers.txt")
        .into_iter()
        .filter(|ua| classify(ua) == Class::Human)
        .collect();
    println!(
        "browsers flagged: {fb} of {browsers} ({:.2}%)",
        percent(fb, browsers)
    );
    println!(
        "crawlers caught: {fc} of {crawlers} ({:.2}%)",
        percent(fc, crawlers)
    );
    assert!(browsers > 10_000 && crawlers > 2_000, "the corpus is whole");
    assert!(
        percent(fb, browsers) <= 0.5,
        "{fb} of {browsers} browsers flagged:\n{}",
        examples.join("\n")
    );
    assert!(
        percent(fc, crawlers) >= 99.0,
        "{} crawlers missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn android_app_clients_are_app_clients() {
    for ua in lines("app-clients.txt") {
        assert!(
            matches!(classify(&ua), Class::AppClient(_)),
            "{ua} is not an app client"
        );
    }
}
