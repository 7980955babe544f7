//! The sign-in in a real browser: headless Debian Chromium, driven over WebDriver by the
//! matching chromedriver, opens the login URL, signs in at the real OpenID provider
//! (`oidc-provider`), picks a role, and the auto-submitted form lands at a local service
//! provider (pysaml2, configured as AWS) that validates the Response.
//!
//! The screenshots of the login and role-picker pages under `docs/` are made here: run with
//! `ROLEGATE_UPDATE_SCREENSHOTS=1` to rewrite them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod login_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Harness;
use login_support::*;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one page may take to show an element. A bound on waiting, not an assertion on speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// chromedriver on a loopback port, and one headless Chromium session.
struct Browser {
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

impl Browser {
    /// A browser session, with JavaScript on or off.
    async fn start(javascript: bool) -> Self {
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
            let ready = http.get(format!("{base}/status")).send().await.ok();
            if let Some(r) = ready {
                let status: Value = r.json().await.unwrap();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=800,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": args,
                    "prefs": {"profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 }},
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

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, once the page shows it.
    async fn find(&self, css: &str) -> String {
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

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// A PNG of the viewport.
    async fn screenshot(&self) -> Vec<u8> {
        let b64 = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

/// Keeps a screenshot: always in the test's directory, and under `docs/` when asked to.
fn keep(dir: &std::path::Path, name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
    std::fs::write(dir.join(name), png).unwrap();
    if std::env::var_os("ROLEGATE_UPDATE_SCREENSHOTS").is_some() {
        std::fs::write(common::repo().join("docs").join(name), png).unwrap();
    }
}

#[tokio::test]
async fn a_person_signs_in_picks_a_role_and_lands_at_the_service_provider() {
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("idp.xml");
    let result = work.path().join("result.json");
    let sp = start_sp(&metadata, &result);
    let acs = sp.ready["acs"].as_str().unwrap().to_owned();
    let mut started = None;
    // A port drawn for the OP may still be taken before it binds; draw again a few times.
    for _ in 0..5 {
        let op_port = free_port();
        let op_issuer = format!("http://127.0.0.1:{op_port}");
        let h = Harness::start(&resources(&op_issuer, None, &acs)).await;
        if let Some(op) = start_op(op_port, &format!("{}/login/callback", h.url)) {
            started = Some((h, op));
            break;
        }
    }
    let (h, _op) = started.expect("oidc-provider did not start (see tests/peers/js/oidc_op.mjs)");
    std::fs::write(&metadata, h.metadata("aws").await).unwrap();
    let browser = Browser::start(true).await;

    // The login URL offers the app's Connections.
    let relay = "https://console.aws.amazon.com/s3/home";
    browser
        .goto(&format!(
            "{}/samlp/aws?RelayState={}",
            h.url,
            serde_urlencoded::to_string([("", relay)]).unwrap()[1..].to_owned()
        ))
        .await;
    browser.find("a[href='/login/via/op']").await;
    assert!(
        browser
            .source()
            .await
            .contains("Continue with Username and password")
    );
    keep(work.path(), "login.png", &browser.screenshot().await);
    browser.click("a[href='/login/via/op']").await;

    // The upstream provider's own sign-in page.
    browser.type_into("#login", "alice").await;
    browser.type_into("#password", "alice-pw").await;
    browser.click("button[type=submit]").await;

    // Back at rolegate: alice maps to two roles (as a User and through a Group).
    let reader = format!("{READER},{}", provider_arn());
    browser.find(&format!("input[value='{reader}']")).await;
    let picker = browser.source().await;
    assert!(picker.contains("Choose a role"), "{picker}");
    assert!(
        picker.contains(&format!("{ADMIN},{}", provider_arn())),
        "{picker}"
    );
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 0.0);
    keep(work.path(), "role-picker.png", &browser.screenshot().await);
    browser
        .click(&format!("label:has(input[value='{reader}'])"))
        .await;
    browser.click("button[type=submit]").await;

    // The auto-submitted form lands at the service provider, which validated the Response.
    browser.find("#outcome").await;
    assert!(
        browser.url().await.starts_with(&acs),
        "{}",
        browser.url().await
    );
    browser.quit().await;
    let outcome: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(
        outcome["ok"], true,
        "the service provider refused: {outcome}"
    );
    let saml = &outcome["result"];
    assert_eq!(saml["name_id"], "alice@example.test");
    assert_eq!(
        saml["name_id_format"],
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    );
    assert_eq!(
        saml["attributes"]["https://aws.amazon.com/SAML/Attributes/Role"],
        json!([reader])
    );
    assert_eq!(
        saml["attributes"]["https://aws.amazon.com/SAML/Attributes/SessionDuration"],
        json!(["3600"])
    );
    assert_eq!(outcome["relay_state"], relay);
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 1.0);
}

/// Without JavaScript the Response still reaches the service provider: the page's button posts
/// the same form.
#[tokio::test]
async fn without_javascript_the_button_posts_the_response() {
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("idp.xml");
    let result = work.path().join("result.json");
    let sp = start_sp(&metadata, &result);
    let acs = sp.ready["acs"].as_str().unwrap().to_owned();
    // The OP is not needed here: carol signs in with a password.
    let h = Harness::start(&resources("http://127.0.0.1:9", None, &acs)).await;
    std::fs::write(&metadata, h.metadata("aws").await).unwrap();
    let browser = Browser::start(false).await;
    browser.goto(&format!("{}/samlp/aws", h.url)).await;
    browser.click("a[href='/login/via/people']").await;
    browser.type_into("#username", "carol").await;
    browser.type_into("#password", "carol-pw").await;
    browser.click("button[type=submit]").await;
    // One role: the page with the form, which no script submits.
    browser.find("form#saml").await;
    // `<noscript>` content is parsed into elements only when scripting is off.
    browser.find("noscript p").await;
    assert!(
        browser.url().await.starts_with(&h.url),
        "{}",
        browser.url().await
    );
    assert!(!result.exists(), "nothing reached the service provider yet");
    browser.click("form#saml button[type=submit]").await;
    browser.find("#outcome").await;
    browser.quit().await;
    let outcome: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(
        outcome["ok"], true,
        "the service provider refused: {outcome}"
    );
    assert_eq!(outcome["result"]["name_id"], "carol@example.test");
    assert_eq!(
        outcome["result"]["attributes"]["https://aws.amazon.com/SAML/Attributes/Role"],
        json!([format!("{READER},{}", provider_arn())])
    );
}
