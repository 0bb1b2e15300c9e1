//! The command line: `refedge replay` on a fixture and on bad input,
//! `refedge payouts` against a running server, and `refedge check-ua` on
//! real user agents.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

fn refedge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_refedge"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn replay_prints_the_outcome_of_a_year() {
    let out = refedge(&["replay", "tests/fixtures/krispcall-year.jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["referrals"][0]["customer_id"], "c1");
    assert_eq!(o["referrals"][0]["partner_id"], "p1");
    let p1 = &o["partners"]["p1"];
    assert_eq!(p1["balances"]["USD"]["paid"], "9.00");
    assert_eq!(p1["balances"]["USD"]["lifetime"], "13.50");
    let kinds = line_kinds(p1);
    assert_eq!(kinds, ["commission", "commission", "void", "payout"]);
    assert!(p1["lines"][1]["explanation"]
        .as_str()
        .unwrap()
        .contains("initial plan standard 15.00 × 2 seats"));
    assert_eq!(
        o["payouts"][1]["items"],
        json!([{"partner_id": "p1", "amount": "9.00", "currency": "USD", "method": "cash"}])
    );
    assert_eq!(o["payouts"][1]["status"], "confirmed");
}

#[test]
fn replay_reports_every_bad_line_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"type\":\"partner\",\"id\":\"p1\",\"program\":\"krispcall\",\"email\":\"a@b.example\"}\n",
            "{\"type\":\"payment\",\"id\":\"x\",\"program\":\"krispcall\",\"occurred_at\":\"2026-01-01T00:00:00Z\",\"customer_id\":\"c\",\"invoice_id\":\"i\",\"currency\":\"USD\",\"lines\":[{\"kind\":\"subscription\",\"amount\":40.5}]}\n",
            "{not json\n",
            "{\"type\":\"refund\",\"id\":\"y\",\"program\":\"nope\",\"occurred_at\":\"2026-01-01T00:00:00Z\",\"customer_id\":\"c\",\"invoice_id\":\"i\",\"amount\":\"1\"}\n",
        ),
    )
    .unwrap();
    let out = refedge(&["replay", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing is printed as an outcome");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.jsonl:2: lines[0].amount: amounts are decimal strings"),
        "{err}"
    );
    assert!(err.contains("bad.jsonl:3: malformed JSON"), "{err}");
    assert!(
        err.contains("bad.jsonl:4: program: unknown program \"nope\""),
        "{err}"
    );
    assert!(err.contains("3 bad line(s); nothing was applied"), "{err}");
}

#[tokio::test]
async fn payouts_command_previews_and_runs_a_batch_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Process::spawn(&data, &[]);
    let p = create_partner(server.addr, "aloware", "al@agency.example").await;
    api(
        server.addr,
        "POST",
        "/api/v1/coupons",
        Some(json!({"code": "AL-CLI", "partner_id": p})),
    )
    .await;
    for e in [
        json!({"id": "s1", "type": "signup", "program": "aloware", "occurred_at": "2026-03-02T00:00:00Z",
               "customer": {"id": "c1"}, "attribution": {"coupon": "AL-CLI"}}),
        json!({"id": "p1", "type": "payment", "program": "aloware", "occurred_at": "2026-03-05T00:00:00Z",
               "customer_id": "c1", "invoice_id": "i1", "currency": "USD", "lines": [{"kind": "subscription", "amount": "100.00"}]}),
    ] {
        assert_eq!(
            api(server.addr, "POST", "/api/v1/events", Some(e))
                .await
                .status,
            201
        );
    }
    let url = format!("http://{}", server.addr);
    let run = |dry: bool| {
        let mut args = vec![
            "payouts",
            "--program",
            "aloware",
            "--as-of",
            "2026-04-10",
            "--server",
            &url,
        ];
        if dry {
            args.push("--dry-run");
        }
        run_json(&args)
    };
    let preview = run(true);
    assert_eq!(
        preview["items"],
        json!([{"partner_id": p, "amount": "20.00", "currency": "USD", "method": "cash"}])
    );
    let none = api(
        server.addr,
        "GET",
        "/api/v1/payouts/po_aloware_20260410",
        None,
    )
    .await;
    assert_eq!(none.status, 404, "a dry run records nothing");
    let real = run(false);
    assert_eq!(real["items"], preview["items"]);
    let stored = api(
        server.addr,
        "GET",
        "/api/v1/payouts/po_aloware_20260410",
        None,
    )
    .await;
    assert_eq!(stored.json()["items"], preview["items"]);
    server.signal("TERM");
    server.wait();
}

#[test]
fn check_ua_answers_each_line_in_order() {
    use std::io::Write;
    let fixture = std::fs::read_to_string("tests/fixtures/user-agents.tsv").unwrap();
    let cases: Vec<(&str, &str)> = fixture
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once('\t').expect("expected<TAB>user agent"))
        .collect();
    assert!(cases.iter().filter(|c| c.0 == "human").count() >= 30);
    assert!(cases.iter().filter(|c| c.0 == "bot").count() >= 50);
    let mut input: Vec<u8> = cases
        .iter()
        .flat_map(|(_, ua)| format!("{ua}\r\n").into_bytes())
        .collect();
    // A line that is not UTF-8 is still answered, in its place.
    input.extend_from_slice(b"Mozilla/5.0 (X11; Linux x86_64) \xff\xfe scraper\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_refedge"))
        .arg("check-ua")
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let answers: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(answers.len(), cases.len() + 1);
    for ((expected, ua), got) in cases.iter().zip(&answers) {
        assert_eq!(got, expected, "{ua:?}");
    }
    assert_eq!(answers[cases.len()], "bot");
}
