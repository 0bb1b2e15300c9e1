//! The real binary: restarts keep everything, SIGTERM loses no click, bad
//! settings are all reported before exit, and the admin token is generated
//! privately on first start.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn restart_keeps_partners_links_keys_and_clicks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Process::spawn(&data, &[]);
    let a1 = create_partner(first.addr, "aircall", "a1@a.example").await;
    let a2 = create_partner(first.addr, "aircall", "a2@b.example").await;
    create_link(first.addr, &a1, "https://aircall.io/", Some("air-one")).await;
    create_link(first.addr, &a2, "https://aircall.io/", Some("air-two")).await;
    let token = click(first.addr, "/r/air-one", None)
        .await
        .attribution_cookie()
        .unwrap();
    assert_eq!(
        api(first.addr, "DELETE", "/api/v1/links/air-two", None)
            .await
            .status,
        200
    );
    first.signal("TERM");
    let (code, _) = first.wait();
    assert_eq!(code, Some(0));

    let second = Process::spawn(&data, &[]);
    let p = api(second.addr, "GET", &format!("/api/v1/partners/{a1}"), None).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.json()["email"], "a1@a.example");
    let l = api(second.addr, "GET", "/api/v1/links/air-one", None)
        .await
        .json();
    assert_eq!(l["click_count"], 1);
    assert_eq!(
        click(second.addr, "/r/air-two", None).await.status,
        410,
        "disabled stays disabled"
    );
    // The key survived: a first-click program keeps the old cookie.
    create_link(second.addr, &a2, "https://aircall.io/", Some("air-three")).await;
    let r = click(second.addr, "/r/air-three", Some(&token)).await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("set-cookie").is_none(),
        "old token no longer verifies after restart"
    );
    // New click ids sort after the old ones.
    let clicks = api(second.addr, "GET", "/api/v1/clicks", None).await.json();
    let ids: Vec<&str> = clicks["clicks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    second.signal("TERM");
    assert_eq!(second.wait().0, Some(0));
}

#[tokio::test]
async fn clicks_served_just_before_sigterm_are_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A long commit window: without the drain on shutdown these would be lost.
    let env = [
        ("REFEDGE_CLICKS__FLUSH_INTERVAL_MS", "5000"),
        ("REFEDGE_CLICKS__BATCH_MAX", "100000"),
    ];
    let server = Process::spawn(&data, &env);
    let p = create_partner(server.addr, "krispcall", "ann@blog.example").await;
    create_link(
        server.addr,
        &p,
        "https://krispcall.com/",
        Some("last-words"),
    )
    .await;
    let mut served = 0;
    for _ in 0..300 {
        if click(server.addr, "/r/last-words", None).await.status == 302 {
            served += 1;
        }
    }
    server.signal("TERM");
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("click queue drained and flushed"), "{log}");

    let again = Process::spawn(&data, &[]);
    let l = api(again.addr, "GET", "/api/v1/links/last-words", None)
        .await
        .json();
    assert_eq!(l["click_count"], served);
    let mut total = 0;
    let mut cursor = String::new();
    loop {
        let page = api(
            again.addr,
            "GET",
            &format!("/api/v1/clicks?limit=1000{cursor}"),
            None,
        )
        .await
        .json();
        total += page["clicks"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(total, served);
    again.signal("INT");
    assert_eq!(again.wait().0, Some(0));
}

#[test]
fn every_bad_setting_is_reported_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("refedge.toml");
    std::fs::write(
        &cfg,
        "[clicks]\nbatch_max = \"lots\"\n[programs.krispcall]\nallowed_hosts = []\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refedge"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .env_clear()
        .env("REFEDGE_LISTEN", "not-an-address")
        .env("REFEDGE_COOKIE__SECURE", "maybe")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for name in [
        "listen",
        "cookie.secure",
        "clicks.batch_max",
        "programs.krispcall.allowed_hosts",
    ] {
        assert!(
            err.contains(&format!("  {name}: ")),
            "{name} not reported in:\n{err}"
        );
    }
    assert!(err.contains("4 invalid setting(s)"), "{err}");
    assert!(!dir.path().join("refedge-data").exists());
}

#[tokio::test]
async fn admin_token_is_generated_private_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_refedge"));
    cmd.arg("serve")
        .env_clear()
        .env("REFEDGE_DATA_DIR", &data)
        .env("REFEDGE_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line.trim().rsplit('/').next().unwrap().parse().unwrap();
    let path = data.join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(data.join("keyring.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let auth = format!("Bearer {token}");
    let r = send(
        addr,
        "GET",
        "/api/v1/clicks",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&path.display().to_string()),
        "token path not logged:\n{log}"
    );
    assert!(
        !log.contains(token.trim()),
        "the token itself must not be logged"
    );
}

#[tokio::test]
async fn kill_9_keeps_every_click_that_reached_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Process::spawn(&data, &[]);
    let p = create_partner(server.addr, "krispcall", "ann@blog.example").await;
    create_link(server.addr, &p, "https://krispcall.com/", Some("crash-me")).await;
    // (each click comes from its own visitor: see `click`)
    for _ in 0..120 {
        assert_eq!(click(server.addr, "/r/crash-me", None).await.status, 302);
    }
    // Reading the link waits for queued clicks to reach disk.
    let before = api(server.addr, "GET", "/api/v1/links/crash-me", None)
        .await
        .json();
    assert_eq!(before["click_count"], 120);
    server.signal("KILL");
    server.wait();

    let again = Process::spawn(&data, &[]);
    let after = api(again.addr, "GET", "/api/v1/links/crash-me", None)
        .await
        .json();
    assert_eq!(after["click_count"], 120);
    let page = api(
        again.addr,
        "GET",
        "/api/v1/clicks?link=crash-me&limit=1000",
        None,
    )
    .await
    .json();
    assert_eq!(page["clicks"].as_array().unwrap().len(), 120);
    again.signal("TERM");
    assert_eq!(again.wait().0, Some(0));
}
