//! A full disk heals by itself (issue 14, items 2 and 3): on a real small
//! filesystem (a size-limited tmpfs the test mounts; skipped, saying so,
//! where it cannot mount), events answer 503 with Retry-After and nothing
//! is recorded, readiness turns 503 without any click traffic, redirects
//! keep answering, and within seconds of space returning everything works
//! again with no restart and no acknowledged event lost.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of `mb` MiB mounted on a fresh folder, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here ({}); CI runs as root and mounts it",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: no mount command ({e})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem: a file as large as it lets be written.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn signup(id: &str, pad: usize) -> Value {
    json!({"id": id, "type": "signup", "program": "krispcall",
           "occurred_at": "2026-03-01T00:00:00Z",
           "customer": {"id": format!("{id}-{}", "x".repeat(pad))}})
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let r = send(addr, "GET", "/readyz", &[], None).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Posts padded signups until one is refused; returns the ids acknowledged
/// and the refusal.
async fn post_until_refused(addr: std::net::SocketAddr, prefix: &str) -> (Vec<String>, Resp) {
    let mut acked = Vec::new();
    for i in 0..2000 {
        let id = format!("{prefix}{i}");
        let r = api(addr, "POST", "/api/v1/events", Some(signup(&id, 150))).await;
        match r.status {
            201 => acked.push(id),
            _ => return (acked, r),
        }
    }
    panic!("the full disk never refused an event");
}

/// A server on a small disk, with a partner and its link `ann-link`, and
/// the disk then filled. `None` where no tmpfs can be mounted.
async fn server_on_a_full_disk() -> Option<(SmallDisk, PathBuf, Process, PathBuf)> {
    let disk = SmallDisk::mount(32)?;
    let data = disk.path().join("data");
    let server = Process::spawn(&data, &[]);
    let p = create_partner(server.addr, "krispcall", "ann@blog.example").await;
    create_link(server.addr, &p, "https://krispcall.com/", Some("ann-link")).await;
    let filler = disk.fill();
    Some((disk, data, server, filler))
}

#[tokio::test]
async fn a_full_disk_answers_503_and_heals_without_a_restart() {
    let Some((_disk, data, server, filler)) = server_on_a_full_disk().await else {
        return;
    };

    let (mut acked, refused) = post_until_refused(server.addr, "a").await;
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("nothing was recorded"));
    let failed_id = format!("a{}", acked.len());
    // No click has been served: readiness still reflects the event log.
    let (status, body) = readyz(server.addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("event log"), "{body}");
    assert_eq!(click(server.addr, "/r/ann-link", None).await.status, 302);

    std::fs::remove_file(filler).unwrap();
    let started = Instant::now();
    loop {
        let (status, body) = readyz(server.addr).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not healed 15 s after space returned: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The refused event was not recorded: it is accepted now, once.
    let r = api(
        server.addr,
        "POST",
        "/api/v1/events",
        Some(signup(&failed_id, 150)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    acked.push(failed_id);
    server.signal("TERM");
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");

    // Every acknowledged event survived, once.
    let again = Process::spawn(&data, &[]);
    let seq = acked.len() as u64 + 1; // + the partner's own event
    let refs = api(
        again.addr,
        "GET",
        &format!("/api/v1/referrals?wait_for={seq}"),
        None,
    )
    .await
    .json();
    let mut seen: Vec<String> = refs["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    acked.sort();
    assert_eq!(seen, acked);
    again.signal("TERM");
    let (code, log) = again.wait();
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_graceful_stop_on_a_full_disk_says_what_it_could_not_write() {
    let Some((_disk, data, server, filler)) = server_on_a_full_disk().await else {
        return;
    };
    let (acked, refused) = post_until_refused(server.addr, "b").await;
    assert_eq!(refused.status, 503);
    for _ in 0..20 {
        assert_eq!(click(server.addr, "/r/ann-link", None).await.status, 302);
    }
    server.signal("TERM");
    let (code, log) = server.wait();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("store cannot write"), "{log}");
    assert!(
        log.contains("acknowledged events were already durable"),
        "{log}"
    );
    // And they were.
    std::fs::remove_file(filler).unwrap();
    let again = Process::spawn(&data, &[]);
    let seq = acked.len() as u64 + 1;
    let refs = api(
        again.addr,
        "GET",
        &format!("/api/v1/referrals?wait_for={seq}"),
        None,
    )
    .await;
    assert_eq!(refs.status, 200, "{}", String::from_utf8_lossy(&refs.body));
    assert_eq!(
        refs.json()["rejections"].as_array().unwrap().len(),
        acked.len()
    );
    again.signal("TERM");
    assert_eq!(again.wait().0, Some(0));
}
