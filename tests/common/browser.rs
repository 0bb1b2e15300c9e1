//! A real browser for the console tests: Debian's `chromium`, headless,
//! driven through `chromedriver` (installed by `.ci/deps`) with
//! fantoccini. The driver runs on a loopback port it is given and is
//! stopped by its pid when the browser is dropped.

use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn which(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

impl Browser {
    /// A browser `width` pixels wide; `None` (saying why) when Chromium or
    /// its driver is not installed and `REFEDGE_REQUIRE_BROWSER` is unset
    /// (CI sets it: there a missing browser fails the test).
    pub async fn start(width: u32) -> Option<Self> {
        let chromium = which(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
        let driver = which(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                std::env::var_os("REFEDGE_REQUIRE_BROWSER").is_none(),
                "chromium and chromedriver are required (bash .ci/deps installs them)"
            );
            eprintln!("skipped: chromium or chromedriver is not installed (bash .ci/deps)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-quic",
                    format!("--window-size={width},900"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let caps: fantoccini::wd::Capabilities = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    // Elements are waited for (a page after a form may
                    // still be loading).
                    let t = fantoccini::wd::TimeoutConfiguration::new(
                        None,
                        Some(Duration::from_secs(30)),
                        Some(Duration::from_secs(5)),
                    );
                    client.update_timeouts(t).await.unwrap();
                    return Some(Self {
                        client,
                        driver,
                        _profile: profile,
                    });
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Does `act` on the element `css`. A page that is still being
    /// replaced (a form's answer loading) can lack the element or take it
    /// away between finding and using it: looked up again, for up to 5 s.
    async fn on<T, F, Fut>(&self, css: &str, act: F) -> T
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let mut tries = 0;
        loop {
            let done = match self.client.find(Locator::Css(css)).await {
                Ok(el) => act(el).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(t) => return t,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    let url = self.client.current_url().await.map(|u| u.to_string());
                    let page = self.client.source().await.unwrap_or_default();
                    panic!("{css}: {e}\nat {url:?}, the page:\n{page}")
                }
            }
        }
    }

    /// The text of the element `css`.
    pub async fn text(&self, css: &str) -> String {
        self.on(css, |el| async move { el.text().await }).await
    }

    /// The page's whole HTML source.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Fills the form fields (`name` → value) of the form `form_css` and
    /// submits it with its button `button_css`.
    pub async fn fill_and_submit(&self, form_css: &str, fields: &[(&str, &str)], button_css: &str) {
        for (name, value) in fields {
            let el = self
                .client
                .find(Locator::Css(&format!("{form_css} [name='{name}']")))
                .await
                .unwrap_or_else(|e| panic!("{form_css} {name}: {e}"));
            let tag = el.tag_name().await.unwrap();
            if tag == "select" {
                el.select_by_value(value).await.unwrap();
            } else {
                el.clear().await.unwrap();
                el.send_keys(value).await.unwrap();
            }
        }
        self.click(&format!("{form_css} {button_css}")).await;
    }

    /// Clicks `css` — a form's button or a link — and waits for the page
    /// it loads: a test reads the next page, never the one it left (a
    /// click returns before the browser has navigated, and a `goto` right
    /// after a sign-in's submit would cancel the request that signs in).
    pub async fn click(&self, css: &str) {
        self.client
            .execute("window.__refedgeLeft = true", vec![])
            .await
            .unwrap();
        self.on(css, |el| async move { el.click().await.map(|_| ()) })
            .await;
        for _ in 0..200 {
            let loaded = self
                .client
                .execute(
                    "return window.__refedgeLeft === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await;
            if matches!(loaded, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} loaded no new page");
    }

    /// The current URL's path and query.
    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Waits (up to 10 s) until the page is `want` (path and query).
    pub async fn expect_path(&self, want: &str) {
        let mut now = String::new();
        for _ in 0..200 {
            now = self.path().await;
            if now == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected to be on {want}, still on {now}");
    }

    /// A PNG screenshot saved to `dir/name.png` when `dir` is given.
    pub async fn screenshot(&self, dir: Option<&std::path::Path>, name: &str) {
        if let Some(dir) = dir {
            let png = self.client.screenshot().await.unwrap();
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    /// The value of a cookie the browser holds (HttpOnly ones too).
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client
            .get_named_cookie(name)
            .await
            .ok()
            .map(|c| c.value().to_string())
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Kills every process whose command line names `profile` (the browser
/// and its helpers: a driver killed mid-test leaves them behind).
fn kill_browser(profile: &std::path::Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_browser(self._profile.path());
    }
}
