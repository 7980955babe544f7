//! The sign-in in a real browser: headless Debian Chromium, driven over WebDriver by the
//! matching chromedriver, opens the login URL, signs in at the real OpenID provider
//! (`oidc-provider`), picks a role, and the auto-submitted form lands at a local service
//! provider (pysaml2, configured as AWS) that validates the Response.
//!
//! The screenshots of the login and role-picker pages under `docs/` are made here: run with
//! `ROLEGATE_UPDATE_SCREENSHOTS=1` to rewrite them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "browser/mod.rs"]
mod browser;
mod common;
mod login_support;

use browser::{Browser, Options};
use common::Harness;
use login_support::*;
use serde_json::{Value, json};

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
    let browser = Browser::start(Options {
        window: Some((800, 900)),
        ..Options::default()
    })
    .await;

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
    let browser = Browser::start(Options {
        no_javascript: true,
        window: Some((800, 900)),
        ..Options::default()
    })
    .await;
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
