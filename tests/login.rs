//! People's sign-in without a browser: a real OpenID provider (`oidc-provider`) upstream, a
//! static Connection, SP-initiated requests, and every refusal the issue lists. Each refusal is
//! a clear page or 4xx, and nothing is signed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod login_support;

use std::io::Write as _;

use base64::Engine as _;
use common::Harness;
use login_support::*;

const AWS_ACS: &str = "https://signin.aws.amazon.com/saml";

struct Env {
    h: Harness,
    yaml: String,
    _op: Peer,
    op_issuer: String,
    _fake: tokio::task::JoinHandle<()>,
}

/// The server with the sign-in resources, the OP, and a "mixup" issuer whose discovery
/// document sends people to the real OP (a provider mix-up).
async fn setup() -> Env {
    // A port drawn for the OP may still be taken before it binds; draw again a few times.
    for _ in 0..5 {
        if let Some(env) = try_setup().await {
            return env;
        }
    }
    panic!("oidc-provider did not start (see tests/peers/js/oidc_op.mjs)");
}

async fn try_setup() -> Option<Env> {
    let op_port = free_port();
    let op_issuer = format!("http://127.0.0.1:{op_port}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    let fake = {
        let (op, me) = (op_issuer.clone(), fake_url.clone());
        let app = axum::Router::new().route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let (op, me) = (op.clone(), me.clone());
                async move {
                    let mut doc: serde_json::Value =
                        reqwest::get(format!("{op}/.well-known/openid-configuration"))
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                    doc["issuer"] = serde_json::Value::String(me);
                    axum::Json(doc)
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() })
    };
    let yaml = resources(&op_issuer, Some(&fake_url), AWS_ACS);
    let h = Harness::start(&yaml).await;
    let op = start_op(op_port, &format!("{}/login/callback", h.url))?;
    Some(Env {
        h,
        yaml,
        _op: op,
        op_issuer,
        _fake: fake,
    })
}

fn signed(h: &Harness) -> f64 {
    h.metric("rolegate_assertions_signed_total")
}

/// Opens the app's login URL and picks `connection`; returns where rolegate sends the browser.
async fn start(agent: &mut Agent, h: &Harness, app: &str, connection: &str) -> String {
    let answer = agent.get(&format!("{}/samlp/{app}", h.url)).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/login/continue"));
    let chooser = agent.get(&format!("{}/login/continue", h.url)).await;
    assert_eq!(chooser.status, 200, "{}", chooser.body);
    assert!(
        chooser
            .body
            .contains(&format!("href=\"/login/via/{connection}\"")),
        "{}",
        chooser.body
    );
    let answer = agent
        .get(&format!("{}/login/via/{connection}", h.url))
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    answer.location.unwrap()
}

fn assert_refused(answer: &Answer, status: u16, says: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(
        answer.body.contains("<!doctype html>"),
        "an error page: {}",
        answer.body
    );
    assert!(
        answer.body.contains(says),
        "the page should say {says:?}: {}",
        answer.body
    );
    assert!(!answer.body.contains("SAMLResponse"));
}

fn sp_validate(
    dir: &std::path::Path,
    metadata: &str,
    response: &str,
    entity: &str,
    acs: &str,
) -> serde_json::Value {
    let metadata_path = common::write(dir, "idp.xml", metadata);
    let response_path = common::write(dir, "response.b64", response);
    let now = jiff::Timestamp::now().as_second().to_string();
    let (ok, out, err) = common::run(
        std::process::Command::new(common::venv().join("bin/python"))
            .arg(common::repo().join("tests/peers/sp_validate.py"))
            .arg("--idp-metadata")
            .arg(metadata_path)
            .arg("--response")
            .arg(response_path)
            .args([
                "--now",
                &now,
                "--entity",
                entity,
                "--acs",
                acs,
                "--strict-audience",
            ]),
    );
    assert!(ok, "pysaml2 refused the response: {err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn oidc_sign_in_picks_a_role_and_posts_a_response_aws_accepts() {
    let env = setup().await;
    let h = &env.h;
    let mut agent = Agent::new();
    let authorize = start(&mut agent, h, "aws", "op").await;
    assert!(authorize.starts_with(&env.op_issuer), "{authorize}");
    assert_eq!(
        param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(param(&authorize, "nonce").is_some() && param(&authorize, "state").is_some());
    let flow_cookie = agent.cookies["rolegate_flow"].clone();
    assert!(
        !flow_cookie.contains(&param(&authorize, "state").unwrap()),
        "the flow cookie is sealed"
    );

    let callback = op_sign_in(&mut agent, &authorize, "alice", "alice-pw").await;
    let answer = agent.get(&callback).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert!(
        answer
            .set_cookies
            .iter()
            .any(|c| c.starts_with("rolegate_session=")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Lax"))
    );
    let picker = agent.get(&format!("{}/login/continue", h.url)).await;
    assert_eq!(picker.status, 200, "{}", picker.body);
    assert!(picker.body.contains("Choose a role"), "{}", picker.body);
    let reader = format!("{READER},{}", provider_arn());
    let admin = format!("{ADMIN},{}", provider_arn());
    assert!(
        picker.body.contains(&reader) && picker.body.contains(&admin),
        "{}",
        picker.body
    );
    assert_eq!(signed(h), 0.0, "nothing is signed before a role is chosen");
    let csrf = form_value(&picker.body, "csrf").unwrap();

    let post = agent
        .post(
            &format!("{}/login/continue", h.url),
            &[("role", &reader), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(post.status, 200, "{}", post.body);
    assert!(post.body.contains(&format!("action=\"{AWS_ACS}\"")));
    assert!(post.body.contains("<noscript>"));
    let response = form_value(&post.body, "SAMLResponse").unwrap();
    let result = sp_validate(
        h.dir.path(),
        &h.metadata("aws").await,
        &response,
        "urn:amazon:webservices",
        AWS_ACS,
    );
    assert_eq!(result["name_id"], "alice@example.test");
    assert_eq!(
        result["attributes"]["https://aws.amazon.com/SAML/Attributes/Role"],
        serde_json::json!([reader])
    );
    assert_eq!(
        result["attributes"]["https://aws.amazon.com/SAML/Attributes/RoleSessionName"],
        serde_json::json!(["alice"])
    );
    assert_eq!(
        result["attributes"]["https://rolegate.dev/display-name"],
        serde_json::json!(["Alice Example"])
    );
    assert_eq!(signed(h), 1.0);

    // The session is reused: the login URL goes straight to the picker.
    agent.get(&format!("{}/samlp/aws", h.url)).await;
    let again = agent.get(&format!("{}/login/continue", h.url)).await;
    assert!(again.body.contains("Choose a role"), "{}", again.body);
    // A role that is not theirs is refused and nothing more is signed.
    let answer = agent
        .post(
            &format!("{}/login/continue", h.url),
            &[
                (
                    "role",
                    &format!("arn:aws:iam::{ACCOUNT}:role/root,{}", provider_arn()),
                ),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_refused(&answer, 403, "not mapped to you");
    assert_eq!(signed(h), 1.0);
}

#[tokio::test]
async fn a_person_with_no_role_is_told_to_ask_the_platform_team() {
    let env = setup().await;
    let mut agent = Agent::new();
    let authorize = start(&mut agent, &env.h, "aws", "op").await;
    let callback = op_sign_in(&mut agent, &authorize, "bob", "bob-pw").await;
    agent.get(&callback).await;
    let answer = agent.get(&format!("{}/login/continue", env.h.url)).await;
    assert_refused(
        &answer,
        403,
        "No role is mapped to you (bob) in aws; ask your platform team.",
    );
    assert!(
        answer.body.contains("href=\"/login/signout\""),
        "{}",
        answer.body
    );
    // Signing out leads back to choosing how to sign in.
    let out = agent.get(&format!("{}/login/signout", env.h.url)).await;
    assert_eq!(out.location.as_deref(), Some("/login/continue"));
    assert!(!agent.cookies.contains_key("rolegate_session"));
    let chooser = agent.get(&format!("{}/login/continue", env.h.url)).await;
    assert!(
        chooser.body.contains("href=\"/login/via/op\""),
        "{}",
        chooser.body
    );
    assert_eq!(signed(&env.h), 0.0);
}

#[tokio::test]
async fn a_bad_state_is_refused() {
    let env = setup().await;
    let mut agent = Agent::new();
    let authorize = start(&mut agent, &env.h, "aws", "op").await;
    let callback = op_sign_in(&mut agent, &authorize, "alice", "alice-pw").await;
    let answer = agent
        .get(&with_param(&callback, "state", Some("forged-state")))
        .await;
    assert_refused(&answer, 400, "state mismatch");
    let answer = agent.get(&with_param(&callback, "state", None)).await;
    assert_refused(&answer, 400, "state mismatch");
    // The provider's own refusal (the person cancelled) with the right state: said plainly.
    let cancelled = format!(
        "{}/login/callback?state={}&error=access_denied&error_description=End-User+aborted+interaction",
        env.h.url,
        param(&callback, "state").unwrap()
    );
    let answer = agent.get(&cancelled).await;
    assert_refused(
        &answer,
        400,
        "did not sign you in (access_denied: End-User aborted interaction)",
    );
    assert!(!agent.cookies.contains_key("rolegate_session"));
    assert_eq!(signed(&env.h), 0.0);
}

#[tokio::test]
async fn a_replayed_code_is_refused_by_the_provider() {
    let env = setup().await;
    let mut agent = Agent::new();
    let authorize = start(&mut agent, &env.h, "aws", "op").await;
    let callback = op_sign_in(&mut agent, &authorize, "alice", "alice-pw").await;
    let flow = agent.cookies["rolegate_flow"].clone();
    let first = agent.get(&callback).await;
    assert_eq!(first.status, 303, "{}", first.body);
    // The same callback again, with the flow cookie it first came with (a replay).
    let mut replayer = Agent::new();
    replayer.cookies.insert("rolegate_flow".into(), flow);
    let answer = replayer.get(&callback).await;
    assert_refused(&answer, 400, "refused the sign-in code (invalid_grant");
    assert!(
        !answer.body.contains(&param(&callback, "code").unwrap()),
        "the code is never echoed"
    );
    assert!(!replayer.cookies.contains_key("rolegate_session"));
    assert_eq!(signed(&env.h), 0.0);
}

#[tokio::test]
async fn a_nonce_mismatch_is_refused() {
    let env = setup().await;
    let mut agent = Agent::new();
    let authorize = start(&mut agent, &env.h, "aws", "op").await;
    // The provider is asked with another nonce than the one sealed in the flow cookie.
    let tampered = with_param(&authorize, "nonce", Some("someone-elses-nonce"));
    let callback = op_sign_in(&mut agent, &tampered, "alice", "alice-pw").await;
    let answer = agent.get(&callback).await;
    assert_refused(&answer, 401, "nonce mismatch");
    assert!(!agent.cookies.contains_key("rolegate_session"));
    assert_eq!(signed(&env.h), 0.0);
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    let env = setup().await;
    let mut agent = Agent::new();
    // Connection "mixup" names another issuer, whose discovery sends people to the real OP.
    let authorize = start(&mut agent, &env.h, "aws", "mixup").await;
    assert!(authorize.starts_with(&env.op_issuer), "{authorize}");
    let callback = op_sign_in(&mut agent, &authorize, "alice", "alice-pw").await;
    let flow = agent.cookies["rolegate_flow"].clone();
    // The provider names itself in the response (RFC 9207): refused before any exchange.
    assert_eq!(
        param(&callback, "iss").as_deref(),
        Some(env.op_issuer.as_str())
    );
    let answer = agent.get(&callback).await;
    assert_refused(&answer, 401, "the authorization response comes from issuer");
    // Without that parameter the code is exchanged, and the id_token's issuer is refused.
    let mut again = Agent::new();
    again.cookies.insert("rolegate_flow".into(), flow);
    let answer = again.get(&with_param(&callback, "iss", None)).await;
    assert_refused(&answer, 401, "the id_token was issued by");
    assert!(!again.cookies.contains_key("rolegate_session"));
    assert_eq!(signed(&env.h), 0.0);
}

async fn static_sign_in(
    agent: &mut Agent,
    h: &Harness,
    app: &str,
    user: &str,
    password: &str,
) -> Answer {
    let answer = agent.get(&format!("{}/samlp/{app}", h.url)).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let chooser = agent.get(&format!("{}/login/continue", h.url)).await;
    assert!(
        chooser.body.contains("href=\"/login/via/people\""),
        "{}",
        chooser.body
    );
    let form = "/login/via/people";
    let page = agent.get(&format!("{}{form}", h.url)).await;
    assert!(page.body.contains("type=\"password\""), "{}", page.body);
    agent
        .post(
            &format!("{}{form}", h.url),
            &[("username", user), ("password", password)],
        )
        .await
}

#[tokio::test]
async fn tampered_cookies_are_refused() {
    let env = setup().await;
    let h = &env.h;
    let mut agent = Agent::new();
    let answer = static_sign_in(&mut agent, h, "aws", "carol", "carol-pw").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let session = agent.cookies["rolegate_session"].clone();
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&session)
        .unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    agent.cookies.insert("rolegate_session".into(), tampered);
    agent.get(&format!("{}/samlp/aws", h.url)).await;
    let answer = agent.get(&format!("{}/login/continue", h.url)).await;
    assert_refused(&answer, 400, "altered");
    assert!(
        answer
            .set_cookies
            .iter()
            .any(|c| c.starts_with("rolegate_session=;") && c.contains("Max-Age=0")),
        "the bad cookie is cleared"
    );

    // A flow cookie that was altered, or a session cookie offered as the flow cookie.
    let mut agent = Agent::new();
    agent
        .cookies
        .insert("rolegate_flow".into(), session.clone());
    let answer = agent.get(&format!("{}/login/continue", h.url)).await;
    assert_refused(&answer, 400, "altered");
    assert_eq!(signed(h), 0.0);

    // The untampered session still works: carol has one role, so the Response comes at once.
    let mut agent = Agent::new();
    agent.cookies.insert("rolegate_session".into(), session);
    agent.get(&format!("{}/samlp/aws", h.url)).await;
    let answer = agent.get(&format!("{}/login/continue", h.url)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(form_value(&answer.body, "SAMLResponse").is_some());
    assert_eq!(signed(h), 1.0);
}

#[tokio::test]
async fn wrong_passwords_are_limited_per_user_and_address() {
    let env = setup().await;
    let h = &env.h;
    let mut agent = Agent::new();
    for i in 0..rolegate::login::users::MAX_FAILURES {
        let answer = if i == 0 {
            static_sign_in(&mut agent, h, "aws", "dave", "guess").await
        } else {
            agent
                .post(
                    &format!("{}/login/via/people", h.url),
                    &[("username", "dave"), ("password", "guess")],
                )
                .await
        };
        assert_refused(&answer, 401, "The username or password is wrong.");
        assert!(
            !answer.body.contains("guess"),
            "the password is never echoed"
        );
    }
    // Now even the right password is refused for dave from this address...
    let answer = agent
        .post(
            &format!("{}/login/via/people", h.url),
            &[("username", "dave"), ("password", "dave-pw")],
        )
        .await;
    assert_refused(
        &answer,
        429,
        "Too many wrong passwords for this user from your address",
    );
    assert!(!agent.cookies.contains_key("rolegate_session"));
    // ...while carol from the same address, and dave from another address, still sign in.
    let answer = agent
        .post(
            &format!("{}/login/via/people", h.url),
            &[("username", "carol"), ("password", "carol-pw")],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let mut elsewhere = Agent::from_address("127.0.0.2");
    let answer = static_sign_in(&mut elsewhere, h, "aws", "dave", "dave-pw").await;
    assert_eq!(answer.status, 303, "{}", answer.body);

    // Spraying one password over many names: the whole address is stopped.
    let mut sprayer = Agent::from_address("127.0.0.3");
    static_sign_in(&mut sprayer, h, "aws", "user-0", "guess").await;
    for i in 1..rolegate::login::users::MAX_FAILURES_PER_ADDRESS {
        let name = format!("user-{i}");
        let answer = sprayer
            .post(
                &format!("{}/login/via/people", h.url),
                &[("username", &name), ("password", "guess")],
            )
            .await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let answer = sprayer
        .post(
            &format!("{}/login/via/people", h.url),
            &[("username", "carol"), ("password", "carol-pw")],
        )
        .await;
    assert_refused(&answer, 429, "Too many wrong passwords");
    assert_eq!(signed(h), 0.0);
}

fn authn_request(issuer: &str, acs: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_req42" Version="2.0" IssueInstant="2026-11-26T10:00:00Z" Destination="http://rolegate/samlp/wiki" AssertionConsumerServiceURL="{acs}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"#
    )
}

fn redirect_encoded(xml: &str) -> String {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(xml.as_bytes()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap())
}

#[tokio::test]
async fn sp_initiated_requests_are_answered_in_response_to_them_and_foreign_ones_refused() {
    let env = setup().await;
    let h = &env.h;
    let login = |query: String| format!("{}/samlp/wiki?{query}", h.url);
    let query = |xml: &str| {
        serde_urlencoded::to_string([
            ("SAMLRequest", redirect_encoded(xml)),
            ("RelayState", "page-7".to_owned()),
        ])
        .unwrap()
    };

    // HTTP-Redirect binding, from the app's service provider: sign in and answer it.
    let mut agent = Agent::new();
    let answer = agent
        .get(&login(query(&authn_request(WIKI_SP, WIKI_ACS))))
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let form = agent.get(&format!("{}/login/continue", h.url)).await;
    assert_eq!(
        form.location.as_deref(),
        Some("/login/via/people"),
        "one Connection: straight to it"
    );
    let answer = agent
        .post(
            &format!("{}/login/via/people", h.url),
            &[("username", "carol"), ("password", "carol-pw")],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let post = agent.get(&format!("{}/login/continue", h.url)).await;
    assert_eq!(post.status, 200, "{}", post.body);
    assert!(post.body.contains(&format!("action=\"{WIKI_ACS}\"")));
    assert_eq!(
        form_value(&post.body, "RelayState").as_deref(),
        Some("page-7")
    );
    let response = form_value(&post.body, "SAMLResponse").unwrap();
    let xml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&response)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        xml.matches("InResponseTo=\"_req42\"").count(),
        2,
        "Response and SubjectConfirmationData: {xml}"
    );
    let result = sp_validate(
        h.dir.path(),
        &h.metadata("wiki").await,
        &response,
        WIKI_SP,
        WIKI_ACS,
    );
    assert_eq!(result["name_id"], "carol@example.test");
    assert_eq!(
        result["name_id_format"],
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
    );
    assert_eq!(signed(h), 1.0);

    // HTTP-POST binding with the session: answered at once.
    let post_binding =
        base64::engine::general_purpose::STANDARD.encode(authn_request(WIKI_SP, WIKI_ACS));
    let answer = agent
        .post(
            &format!("{}/samlp/wiki", h.url),
            &[("SAMLRequest", &post_binding)],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let post = agent.get(&format!("{}/login/continue", h.url)).await;
    assert!(
        form_value(&post.body, "SAMLResponse").is_some(),
        "{}",
        post.body
    );
    assert_eq!(signed(h), 2.0);

    // An unknown issuer, and a foreign ACS URL, over either binding: refused, nothing signed.
    let evil = authn_request("https://evil.example.test/sp", WIKI_ACS);
    let answer = agent.get(&login(query(&evil))).await;
    assert_refused(&answer, 400, "which is not the service provider of SAMLApp");
    let foreign = authn_request(WIKI_SP, "https://evil.example.test/acs");
    let answer = agent.get(&login(query(&foreign))).await;
    assert_refused(&answer, 400, "which is not the recipient of SAMLApp");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&foreign);
    let answer = agent
        .post(
            &format!("{}/samlp/wiki", h.url),
            &[("SAMLRequest", &encoded)],
        )
        .await;
    assert_refused(&answer, 400, "which is not the recipient of SAMLApp");
    let answer = agent
        .get(&login("SAMLRequest=bm90IGRlZmxhdGU%3D".into()))
        .await;
    assert_refused(&answer, 400, "cannot be read");
    assert_eq!(signed(h), 2.0);
}

/// The router alone (`tower::ServiceExt::oneshot`): each dead end is a page with a 4xx, or a
/// 503 while there is no cookie key.
#[tokio::test]
async fn dead_ends_are_pages_with_a_status() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    let env = setup().await;
    let app = rolegate::server::router(env.h.state.clone());
    let call = |uri: &str| {
        let app = app.clone();
        let request = Request::get(uri).body(Body::empty()).unwrap();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let csp = response
                .headers()
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, csp, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    for (uri, status, says) in [
        (
            "/samlp/nowhere",
            404,
            "There is no SAMLApp &quot;nowhere&quot;",
        ),
        (
            "/login/continue",
            400,
            "This sign-in has expired or was not started here",
        ),
        (
            "/login/via/op",
            400,
            "This sign-in has expired or was not started here",
        ),
        (
            "/login/callback?code=c&state=s",
            400,
            "This sign-in has expired or was not started here",
        ),
    ] {
        let (got, csp, body) = call(uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(body.contains(says), "{uri}: {body}");
        assert!(csp.unwrap().contains("frame-ancestors 'none'"), "{uri}");
    }
    // A flow for the wiki app, then a Connection it does not allow, and one that is unknown.
    let mut agent = Agent::new();
    agent.get(&format!("{}/samlp/wiki", env.h.url)).await;
    let flow = agent.cookies["rolegate_flow"].clone();
    for (connection, status) in [("op", 403), ("nowhere", 403)] {
        let request = Request::get(format!("/login/via/{connection}"))
            .header("cookie", format!("rolegate_flow={flow}"))
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{connection}");
    }
    // Without a cookie key, sign-in is unavailable rather than insecure.
    env.h.state.login.set_key(None);
    let (status, _, body) = call("/samlp/aws").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no session key"), "{body}");
    assert_eq!(signed(&env.h), 0.0);
}

/// Replicas that share the cookie key serve any step of one sign-in: nothing of it is in a
/// server's memory. A replica with another key refuses the cookies.
#[tokio::test]
async fn a_sign_in_moves_between_replicas_that_share_the_key() {
    let env = setup().await;
    let a = &env.h;
    let b = Harness::start(&env.yaml).await;
    let c = Harness::start(&env.yaml).await;
    let material = rolegate::login::CookieKey::generate_material().unwrap();
    for h in [a, &b] {
        h.state.login.set_key(Some(
            rolegate::login::CookieKey::from_material(material.as_bytes()).unwrap(),
        ));
    }
    let mut agent = Agent::new();
    agent.get(&format!("{}/samlp/aws", a.url)).await;
    let chooser = agent.get(&format!("{}/login/continue", b.url)).await;
    assert_eq!(chooser.status, 200, "{}", chooser.body);
    let answer = agent
        .post(
            &format!("{}/login/via/people", a.url),
            &[("username", "carol"), ("password", "carol-pw")],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let post = agent.get(&format!("{}/login/continue", b.url)).await;
    assert_eq!(post.status, 200, "{}", post.body);
    assert!(form_value(&post.body, "SAMLResponse").is_some());
    assert_eq!(signed(&b), 1.0);

    agent.get(&format!("{}/samlp/aws", a.url)).await;
    let answer = agent.get(&format!("{}/login/continue", c.url)).await;
    assert_refused(&answer, 400, "altered");
    assert_eq!(signed(&c), 0.0);
}

/// An identity too large for a cookie is refused with a page that says so, rather than lost by
/// the browser; a long RelayState likewise.
#[tokio::test]
async fn what_a_cookie_cannot_hold_is_refused_plainly() {
    let env = setup().await;
    let mut agent = Agent::new();
    let answer = static_sign_in(&mut agent, &env.h, "aws", "erin", "erin-pw").await;
    assert_refused(
        &answer,
        401,
        "names 401 groups, more than a session cookie can hold",
    );
    assert!(!agent.cookies.contains_key("rolegate_session"));
    let long = "\u{1}".repeat(2000);
    let url = format!(
        "{}/samlp/aws?{}",
        env.h.url,
        serde_urlencoded::to_string([("RelayState", long.as_str())]).unwrap()
    );
    let answer = agent.get(&url).await;
    assert_refused(&answer, 400, "RelayState is too long");
    assert_eq!(signed(&env.h), 0.0);
}

/// The server with the sign-in resources but no OpenID provider: enough for passwords.
async fn static_only() -> Harness {
    Harness::start(&resources("http://127.0.0.1:9", None, AWS_ACS)).await
}

/// An agent at `address` that carries on the sign-in whose flow cookie is `flow`, with
/// `X-Forwarded-For: forwarded` if given.
fn carrying(flow: &str, address: &str, forwarded: Option<&str>) -> Agent {
    let mut agent = Agent::from_address(address);
    agent
        .cookies
        .insert("rolegate_flow".into(), flow.to_owned());
    if let Some(forwarded) = forwarded {
        agent
            .headers
            .insert("x-forwarded-for".into(), forwarded.to_owned());
    }
    agent
}

/// Opens a sign-in to `aws` and returns its flow cookie.
async fn flow_cookie(h: &Harness) -> String {
    let mut agent = Agent::new();
    let answer = agent.get(&format!("{}/samlp/aws", h.url)).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    agent.cookies["rolegate_flow"].clone()
}

async fn password(agent: &mut Agent, h: &Harness, user: &str, password: &str) -> Answer {
    agent
        .post(
            &format!("{}/login/via/people", h.url),
            &[("username", user), ("password", password)],
        )
        .await
}

/// Finding 3: the check and the count were apart, with bcrypt in between, so a burst all passed
/// the check. Now each attempt is reserved first: exactly the allowance reaches bcrypt.
#[tokio::test]
async fn a_burst_of_wrong_passwords_gets_exactly_the_limit_through_to_bcrypt() {
    let h = static_only().await;
    let flow = flow_cookie(&h).await;
    let burst = 30;
    let answers = futures::future::join_all((0..burst).map(|_| {
        let (h, flow) = (&h, flow.clone());
        async move {
            let mut agent = carrying(&flow, "127.0.0.40", None);
            password(&mut agent, h, "dave", "guess").await
        }
    }))
    .await;
    let checked = answers.iter().filter(|a| a.status == 401).count();
    assert_eq!(
        checked,
        rolegate::login::users::MAX_FAILURES,
        "statuses: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for answer in answers.iter().filter(|a| a.status != 401) {
        assert_refused(
            answer,
            429,
            "Too many wrong passwords for this user from your address; try again after",
        );
    }
    assert!(
        answers.iter().all(|a| a
            .set_cookies
            .iter()
            .all(|c| !c.contains("rolegate_session="))),
        "no session from a burst"
    );
    // And the right password now waits out the window too.
    let mut agent = carrying(&flow, "127.0.0.40", None);
    let answer = password(&mut agent, &h, "dave", "dave-pw").await;
    assert_refused(&answer, 429, "Too many wrong passwords");
    assert_eq!(signed(&h), 0.0);
}

/// Finding 3: guessing one person's password from many addresses is bounded too.
#[tokio::test]
async fn a_user_is_locked_out_across_addresses() {
    use rolegate::login::users::{MAX_FAILURES, MAX_FAILURES_PER_USER};
    let h = static_only().await;
    let flow = flow_cookie(&h).await;
    // Each address stays under its own limit for dave.
    let per_address = MAX_FAILURES - 1;
    for i in 0..MAX_FAILURES_PER_USER {
        let address = format!("127.0.1.{}", 1 + i / per_address);
        let mut agent = carrying(&flow, &address, None);
        let answer = password(&mut agent, &h, "dave", "guess").await;
        assert_refused(&answer, 401, "The username or password is wrong.");
    }
    let mut fresh = carrying(&flow, "127.0.2.1", None);
    let answer = password(&mut fresh, &h, "dave", "dave-pw").await;
    assert_refused(
        &answer,
        429,
        "Too many wrong passwords for this user; try again after",
    );
    assert!(!fresh.cookies.contains_key("rolegate_session"));
    // Others, from that address, are not affected.
    let answer = password(&mut fresh, &h, "carol", "carol-pw").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
}

/// Finding 3: `X-Forwarded-For` from a client that is not a trusted proxy changes nothing.
#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let h = static_only().await;
    let flow = flow_cookie(&h).await;
    for i in 0..rolegate::login::users::MAX_FAILURES {
        let mut agent = carrying(&flow, "127.0.3.1", Some(&format!("203.0.113.{i}")));
        let answer = password(&mut agent, &h, "dave", "guess").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let mut agent = carrying(&flow, "127.0.3.1", Some("203.0.113.200"));
    let answer = password(&mut agent, &h, "dave", "dave-pw").await;
    assert_refused(
        &answer,
        429,
        "Too many wrong passwords for this user from your address",
    );
}

/// Finding 3: behind an Ingress every request comes from the proxy; with the proxy trusted, one
/// person's wrong passwords no longer lock out everyone behind it, and a client cannot escape
/// its count by prepending addresses of its own.
#[tokio::test]
async fn forwarded_for_is_honoured_from_a_trusted_proxy() {
    let h = static_only().await;
    h.state
        .login
        .set_trusted_proxies(rolegate::login::client::TrustedProxies::new(vec![
            "127.0.4.1/32".parse().unwrap(),
        ]));
    let flow = flow_cookie(&h).await;
    let ingress = |forwarded: &str| carrying(&flow, "127.0.4.1", Some(forwarded));
    for _ in 0..rolegate::login::users::MAX_FAILURES {
        let answer = password(&mut ingress("203.0.113.7"), &h, "dave", "guess").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    for forwarded in ["203.0.113.7", "203.0.113.99, 203.0.113.7"] {
        let answer = password(&mut ingress(forwarded), &h, "dave", "dave-pw").await;
        assert_refused(
            &answer,
            429,
            "Too many wrong passwords for this user from your address",
        );
    }
    let mut other = ingress("203.0.113.8");
    let answer = password(&mut other, &h, "dave", "dave-pw").await;
    assert_eq!(
        answer.status, 303,
        "another client behind the proxy: {}",
        answer.body
    );
    assert!(other.cookies.contains_key("rolegate_session"));
}

/// Finding 3: an IPv6 client is counted per /64, so hopping through its own block gains nothing.
#[tokio::test]
async fn ipv6_clients_are_counted_per_64() {
    let h = static_only().await;
    h.state
        .login
        .set_trusted_proxies(rolegate::login::client::TrustedProxies::new(vec![
            "127.0.5.1/32".parse().unwrap(),
        ]));
    let flow = flow_cookie(&h).await;
    let ingress = |forwarded: &str| carrying(&flow, "127.0.5.1", Some(forwarded));
    for i in 0..rolegate::login::users::MAX_FAILURES {
        let client = format!("2001:db8:1:2::{:x}", i + 1);
        let answer = password(&mut ingress(&client), &h, "dave", "guess").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let answer = password(&mut ingress("2001:db8:1:2:ffff::1"), &h, "dave", "dave-pw").await;
    assert_refused(
        &answer,
        429,
        "Too many wrong passwords for this user from your address",
    );
    let answer = password(&mut ingress("[2001:db8:1:3::1]:443"), &h, "dave", "dave-pw").await;
    assert_eq!(answer.status, 303, "another /64: {}", answer.body);
}

/// Finding 3: bcrypt work is bounded; past the queue a password is refused at once with a 503
/// that says why, and is not counted against anyone.
#[tokio::test]
async fn too_many_password_checks_at_once_are_refused_with_503() {
    let h = static_only().await;
    let flow = flow_cookie(&h).await;
    let queue = std::sync::Arc::clone(&h.state.login.password_queue);
    let all = u32::try_from(queue.available_permits()).unwrap();
    let held = queue.try_acquire_many_owned(all).unwrap();
    let mut agent = carrying(&flow, "127.0.6.1", None);
    let answer = password(&mut agent, &h, "dave", "guess").await;
    assert_refused(
        &answer,
        503,
        "Too many sign-ins are being checked at once; try again in a moment.",
    );
    drop(held);
    let answer = password(&mut agent, &h, "dave", "dave-pw").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let attempt = rolegate::login::users::Attempt {
        connection: "people".into(),
        user: "dave".into(),
        address: "127.0.6.1".into(),
    };
    assert_eq!(
        h.state
            .login
            .attempts
            .failures(&attempt, jiff::Timestamp::now()),
        0
    );
}

/// A `tracing` writer into a buffer the test reads.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Finding 12: what someone typed as a username (often a password, here with a line break that
/// would forge a log line) never reaches the log; a short hash of it does.
#[tokio::test]
async fn a_typed_username_never_reaches_the_log() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    // The server runs on this test's thread (a current-thread runtime), so it logs here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = static_only().await;
    let flow = flow_cookie(&h).await;
    let typed = "Tr0ub4dor&3-hunter2\nERROR rolegate: forged line";
    let mut agent = carrying(&flow, "127.0.7.1", None);
    let answer = password(&mut agent, &h, typed, "correct horse battery").await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("wrong password"))
        .unwrap_or_else(|| panic!("no wrong-password line in:\n{text}"));
    let hash = rolegate::login::users::log_name(typed);
    assert!(line.contains(&format!("user_hash={hash}")), "{line}");
    for secret in ["hunter2", "Tr0ub4dor", "forged line", "correct horse"] {
        assert!(
            !text.contains(secret),
            "{secret:?} reached the log:\n{text}"
        );
    }
}

/// Finding 11: over https the cookies are `__Host-` (Secure, Path=/, no Domain), and a cookie of
/// the bare name, which a sibling host or a plain-http page could plant, is not read.
#[tokio::test]
async fn over_https_the_cookies_are_host_only() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    let h = static_only().await;
    let mut state = h.state.clone();
    state.public_url = "https://rolegate.example.test".into();
    let app = rolegate::server::router(state);
    let call = |request: Request<Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let cookies: Vec<String> = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, cookies, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, cookies, _) = call(
        Request::get("/samlp/aws")
            .header("sec-fetch-site", "none")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 303);
    let [flow_set] = cookies.as_slice() else {
        panic!("{cookies:?}")
    };
    assert!(flow_set.starts_with("__Host-rolegate_flow="), "{flow_set}");
    for part in ["; Path=/;", "; HttpOnly;", "; SameSite=Lax;", "; Secure"] {
        assert!(flow_set.contains(part), "{flow_set}");
    }
    assert!(
        !flow_set.to_ascii_lowercase().contains("domain"),
        "{flow_set}"
    );
    let value = flow_set
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let continue_with = |cookie: String| {
        Request::get("/login/continue")
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, body) = call(continue_with(format!("rolegate_flow={value}"))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("This sign-in has expired or was not started here"),
        "{body}"
    );
    let (status, _, body) = call(continue_with(format!("__Host-rolegate_flow={value}"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("href=\"/login/via/people\""), "{body}");
    // The session cookie is named the same way.
    let login = Request::post("/login/via/people")
        .header("cookie", format!("__Host-rolegate_flow={value}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("username=carol&password=carol-pw"))
        .unwrap();
    let (status, cookies, body) = call(login).await;
    assert_eq!(status, 303, "{body}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-rolegate_session=") && c.ends_with("; Secure")),
        "{cookies:?}"
    );
    assert_eq!(signed(&h), 0.0);
}

/// Finding 11: the role picker's POST must carry the session's CSRF token; without it, or with
/// another session's, it is a clear 403 and nothing is signed.
#[tokio::test]
async fn the_role_post_needs_the_sessions_csrf_token() {
    let h = static_only().await;
    let reader = format!("{READER},{}", provider_arn());
    let mut agent = Agent::new();
    let answer = static_sign_in(&mut agent, &h, "aws", "carol", "carol-pw").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let mut other = Agent::new();
    static_sign_in(&mut other, &h, "aws", "dave", "dave-pw").await;
    // dave's token is a real one, of another session.
    other
        .headers
        .insert("sec-fetch-site".into(), "cross-site".into());
    other.get(&format!("{}/samlp/aws", h.url)).await;
    let page = other.get(&format!("{}/login/continue", h.url)).await;
    let daves = form_value(&page.body, "csrf").unwrap();
    let url = format!("{}/login/continue", h.url);
    for form in [
        vec![("role", reader.as_str())],
        vec![("role", reader.as_str()), ("csrf", "")],
        vec![("role", reader.as_str()), ("csrf", "forged")],
        vec![("role", reader.as_str()), ("csrf", daves.as_str())],
        vec![("confirm", "yes"), ("csrf", daves.as_str())],
    ] {
        let answer = agent.post(&url, &form).await;
        assert_refused(
            &answer,
            403,
            "This form did not come from your sign-in page (its CSRF token is missing or wrong)",
        );
    }
    assert_eq!(signed(&h), 0.0);
}

/// Finding 11: a sign-in link on another site (or from a client that does not say where it
/// comes from) no longer posts a Response at once: one deliberate click on rolegate's own page
/// does. A link the person opens themselves still goes straight through.
#[tokio::test]
async fn a_cross_site_sign_in_link_needs_one_click() {
    let h = static_only().await;
    let reader = format!("{READER},{}", provider_arn());
    let mut agent = Agent::new();
    static_sign_in(&mut agent, &h, "aws", "carol", "carol-pw").await;
    let relay = "https://console.aws.amazon.com/iam/home";
    let link = format!(
        "{}/samlp/aws?{}",
        h.url,
        serde_urlencoded::to_string([("RelayState", relay)]).unwrap()
    );
    let mut signed_so_far = 0.0;
    for site in [Some("cross-site"), Some("same-site"), None] {
        match site {
            Some(site) => agent.headers.insert("sec-fetch-site".into(), site.into()),
            None => agent.headers.remove("sec-fetch-site"),
        };
        let answer = agent.get(&link).await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        let page = agent.get(&format!("{}/login/continue", h.url)).await;
        assert_eq!(page.status, 200, "{site:?}: {}", page.body);
        assert!(page.body.contains("Continue to aws?"), "{}", page.body);
        assert!(!page.body.contains("SAMLResponse") && !page.body.contains("<script"));
        assert_eq!(
            signed(&h),
            signed_so_far,
            "nothing is signed before the click"
        );
        assert_eq!(
            form_value(&page.body, "role").as_deref(),
            Some(reader.as_str())
        );
        let csrf = form_value(&page.body, "csrf").unwrap();
        let post = agent
            .post(
                &format!("{}/login/continue", h.url),
                &[("role", &reader), ("csrf", &csrf), ("confirm", "yes")],
            )
            .await;
        assert_eq!(post.status, 200, "{}", post.body);
        assert!(
            form_value(&post.body, "SAMLResponse").is_some(),
            "{}",
            post.body
        );
        assert_eq!(form_value(&post.body, "RelayState").as_deref(), Some(relay));
        signed_so_far += 1.0;
        assert_eq!(signed(&h), signed_so_far);
    }
    // An app without roles: the click carries no role.
    agent
        .headers
        .insert("sec-fetch-site".into(), "cross-site".into());
    agent.get(&format!("{}/samlp/wiki", h.url)).await;
    let page = agent.get(&format!("{}/login/continue", h.url)).await;
    assert!(page.body.contains("Continue to wiki?"), "{}", page.body);
    assert_eq!(form_value(&page.body, "role"), None);
    let csrf = form_value(&page.body, "csrf").unwrap();
    let post = agent
        .post(
            &format!("{}/login/continue", h.url),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert!(
        form_value(&post.body, "SAMLResponse").is_some(),
        "{}",
        post.body
    );
    // Opened by the person themselves, or from rolegate's own pages: straight through.
    for site in ["none", "same-origin"] {
        agent.headers.insert("sec-fetch-site".into(), site.into());
        agent.get(&link).await;
        let post = agent.get(&format!("{}/login/continue", h.url)).await;
        assert!(
            form_value(&post.body, "SAMLResponse").is_some(),
            "{site}: {}",
            post.body
        );
    }
}
