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

    let post = agent
        .post(&format!("{}/login/continue", h.url), &[("role", &reader)])
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
            &[(
                "role",
                &format!("arn:aws:iam::{ACCOUNT}:role/root,{}", provider_arn()),
            )],
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
