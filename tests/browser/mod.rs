//! A headless Chromium driven over WebDriver (Debian's chromium and chromedriver), for the tests
//! that need a real browser: people's sign-in (`login_browser.rs`) and Auth0's browser sample
//! (`auth0_browser.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one page may take to show an element. A bound on waiting, not an assertion on speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How the browser is started.
#[derive(Debug, Default)]
pub struct Options {
    /// JavaScript off, as some people browse.
    pub no_javascript: bool,
    /// Trust certificates chained to the CA whose SubjectPublicKeyInfo hashes (SHA-256, base64)
    /// to this, beyond the system's roots.
    pub trust_spki_sha256: Option<String>,
    /// The window size, for screenshots.
    pub window: Option<(u32, u32)>,
}

/// chromedriver on a loopback port, and one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Close the session first (also when a test failed midway), so that chromedriver takes
        // Chromium down with it; a killed chromedriver would leave the browser running.
        use std::io::{Read as _, Write as _};
        let address = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(PATIENCE));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                // The answer comes once the browser is closed; its first bytes are enough.
                let _ = stream.read(&mut [0u8; 512]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// A new browser session.
    pub async fn start(options: Options) -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: run `make test` (or tests/peers/install.sh)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                let status: Value = r.json().await.unwrap();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .map(String::from)
        .into();
        if let Some((width, height)) = options.window {
            args.push(format!("--window-size={width},{height}"));
        }
        if let Some(spki) = &options.trust_spki_sha256 {
            args.push(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let javascript = if options.no_javascript { 2 } else { 1 };
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": args,
                    "prefs": {"profile.managed_default_content_settings.javascript": javascript},
                },
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Self {
            driver,
            http,
            session,
            base,
            _profile: profile,
        }
    }

    /// One WebDriver command of this session; its `value`.
    pub async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, once the page shows it.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self
                .command(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {css:?} at {}:\n{}",
                self.url().await,
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Chooses `file` in the file input `css`, as a person picking it would.
    pub async fn choose_file(&self, css: &str, file: &Path) {
        self.type_into(css, &file.display().to_string()).await;
    }

    /// The text of the element `id` now (empty if none).
    async fn text_now(&self, id: &str) -> String {
        self.command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text of `css` once it is not empty.
    pub async fn text_of(&self, css: &str) -> String {
        let id = self.find(css).await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.text_now(&id).await;
            if !text.is_empty() {
                return text;
            }
            assert!(Instant::now() < deadline, "{css:?} stayed empty");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `button` until `results` shows something: for pages that arm a button only once
    /// an earlier call has answered.
    pub async fn click_until_result(&self, button: &str, results: &str) -> String {
        let id = self.find(results).await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.click(button).await;
            for _ in 0..20 {
                let text = self.text_now(&id).await;
                if !text.is_empty() {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(Instant::now() < deadline, "{results:?} stayed empty");
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    pub async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}
