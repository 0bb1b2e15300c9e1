//! A real `nats-server` with JetStream for the cluster tests: on a free
//! loopback port, its store in a temp dir, stopped by pid. Installed by
//! `.ci/deps` (Debian's package).

use super::Process;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

fn binary() -> PathBuf {
    for p in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nats-server is not installed: run .ci/deps (it installs Debian's nats-server)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    pub fn start() -> Self {
        let mut n = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        n.run();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let child = Command::new(binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (`kill -9` by pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A refedge cluster node: the real binary, `kill -9`ed on drop.
pub struct Node {
    pub id: String,
    pub role: &'static str,
    pub dir: PathBuf,
    nats_url: String,
    extra: Vec<(String, String)>,
    pub process: Option<Process>,
}

impl Node {
    pub fn start(
        nats: &Nats,
        root: &Path,
        id: &str,
        role: &'static str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut n = Self {
            id: id.into(),
            role,
            dir: root.join(id),
            nats_url: nats.url(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            process: None,
        };
        n.run();
        n
    }

    fn run(&mut self) {
        let mut env: Vec<(&str, &str)> = vec![
            ("REFEDGE_CLUSTER__NATS_URL", &self.nats_url),
            ("REFEDGE_CLUSTER__ROLE", self.role),
            ("REFEDGE_CLUSTER__NODE_ID", &self.id),
            ("REFEDGE_CLUSTER__LEASE_SECONDS", "2"),
        ];
        env.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.process = Some(Process::spawn(&self.dir, &env));
    }

    pub fn addr(&self) -> SocketAddr {
        self.process.as_ref().expect("running").addr
    }

    /// `kill -9`, and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.signal("KILL");
            let _ = p.wait();
        }
    }

    /// A graceful stop (`SIGTERM`); returns the exit code and the log.
    pub fn stop(&mut self) -> (Option<i32>, String) {
        let p = self.process.take().expect("running");
        p.signal("TERM");
        p.wait()
    }

    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
