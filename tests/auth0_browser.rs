//! Auth0's own browser sample for the AWS integration, running in a real browser against
//! rolegate: headless Debian Chromium (driven over WebDriver by chromedriver) opens
//! `examples/auth0-browser/` served from its own origin. The documentation's "Client Side
//! sample code" (`sample.js`) calls `auth0.getDelegationToken(...)` (auth0.js 7.6.1, bundled by
//! esbuild) against rolegate's `/delegation` over https (a test CA the browser trusts by its
//! key), then `putObject` with the AWS SDK for JavaScript v2 into moto's S3. boto3 finds the
//! object under the person's prefix. The same page from an origin the SAMLApp does not allow
//! gets nothing: the server refuses it with 403 before signing anything, the sample never arms
//! its upload button, and no object lands.
//!
//! Only configuration values differ from the committed example: the test sets them in
//! `config.js` and `sample.js` (addresses, client IDs, ARNs, bucket, the login's id_token),
//! each replacement asserted to hit exactly one literal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth0_support;
#[path = "browser/mod.rs"]
mod browser;
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use auth0_support::{CLIENT_ID, Op};
use browser::{Browser, Options, PATIENCE};
use common::{Harness, moto, run, unique, venv};
use serde_json::json;

const ROLE: &str = "arn:aws:iam::123456789012:role/auth0-uploader";
const PRINCIPAL: &str = "arn:aws:iam::123456789012:saml-provider/auth0-migrated";

fn peers() -> PathBuf {
    std::env::var_os("ROLEGATE_PEERS").map_or_else(|| common::repo().join(".peers"), PathBuf::from)
}

/// Serves the example page on its own origin: `index.html` as committed, `config.js` and
/// `sample.js` with their configuration values set, and the libraries from the peers folder.
async fn serve_page(
    (config_js, sample_js): (String, String),
    listener: tokio::net::TcpListener,
) -> String {
    let example = common::repo().join("examples/auth0-browser");
    let js = peers().join("js");
    let file = |path: PathBuf, kind: &'static str| {
        move || {
            let path = path.clone();
            async move {
                let body =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                ([(axum::http::header::CONTENT_TYPE, kind)], body)
            }
        }
    };
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(file(example.join("index.html"), "text/html")),
        )
        .route(
            "/sample.js",
            axum::routing::get(move || {
                let body = sample_js.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/javascript")],
                        body,
                    )
                }
            }),
        )
        .route(
            "/jquery.min.js",
            axum::routing::get(file(
                js.join("node_modules/jquery/dist/jquery.min.js"),
                "text/javascript",
            )),
        )
        .route(
            "/auth0.min.js",
            axum::routing::get(file(js.join("auth0.min.js"), "text/javascript")),
        )
        .route(
            "/aws-sdk.min.js",
            axum::routing::get(file(
                js.join("node_modules/aws-sdk/dist/aws-sdk.min.js"),
                "text/javascript",
            )),
        )
        .route(
            "/config.js",
            axum::routing::get(move || {
                let body = config_js.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/javascript")],
                        body,
                    )
                }
            }),
        );
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Replaces `from` by `to` in `text`, where `from` occurs exactly once.
fn set(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// The committed `config.js` and `sample.js` with the test's values for their configuration
/// values, and nothing else changed.
fn page_files(domain: &str, bucket: &str, id_token: &str) -> (String, String) {
    let read = |name: &str| {
        std::fs::read_to_string(common::repo().join("examples/auth0-browser").join(name)).unwrap()
    };
    let config = read("config.js");
    let config = set(
        &config,
        "var AUTH0_DOMAIN = 'rolegate.example.com';",
        &format!("var AUTH0_DOMAIN = '{domain}';"),
    );
    let config = set(
        &config,
        "var AUTH0_CLIENT_ID = 'web';",
        &format!("var AUTH0_CLIENT_ID = '{CLIENT_ID}';"),
    );
    let config = set(
        &config,
        "var AWS_S3_ENDPOINT = '';",
        &format!("var AWS_S3_ENDPOINT = '{}';", moto()),
    );
    let config = set(
        &config,
        "var user = {id: 'alice@example.com'};",
        "var user = {id: 'alice@example.com'};",
    );
    let sample = read("sample.js");
    let sample = set(&sample, "\"{TARGET_CLIENT_ID}\"", "\"aws\"");
    let sample = set(&sample, "\"USER_ID_TOKEN\"", &format!("\"{id_token}\""));
    let sample = set(
        &sample,
        "\"THE_CLIENT_ID_OF_CALLER\"",
        &format!("\"{CLIENT_ID}\""),
    );
    let sample = set(
        &sample,
        "\"arn:aws:iam::010616021751:role/foo\"",
        &format!("\"{ROLE}\""),
    );
    let sample = set(
        &sample,
        "\"arn:aws:iam::010616021751:saml-provider/idpname\"",
        &format!("\"{PRINCIPAL}\""),
    );
    let sample = set(&sample, "'THE_BUCKET'", &format!("'{bucket}'"));
    (config, sample)
}

/// boto3 against moto: `script` runs with `s3` a client and `bucket` the bucket name.
fn boto3(bucket: &str, script: &str) -> String {
    let program = format!(
        "import sys, boto3\ns3 = boto3.client('s3', region_name='us-east-1')\nbucket = sys.argv[1]\n{script}"
    );
    let (ok, out, err) = run(Command::new(venv().join("bin/python"))
        .args(["-c", &program, bucket])
        .env("AWS_ENDPOINT_URL", moto())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test"));
    assert!(ok, "boto3: {err}");
    out
}

/// Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium pins keys.
fn spki_sha256(cert_pem: &str) -> String {
    use base64::Engine as _;
    use x509_parser::prelude::FromDer as _;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&pem.contents).unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The resources: the seed settings imported as SAMLApp `aws`, allowing browser apps from
/// `origin`, and `examples/auth0`'s account, Connection (at `issuer`) and uploader mapping.
fn resources(origin: &str, issuer: &str) -> String {
    let examples = common::repo().join("examples/auth0");
    let read = |name: &str| std::fs::read_to_string(examples.join(name)).unwrap();
    let seed = read("aws-addon.json");
    let app = rolegate::auth0::import_addon(&seed, "aws").unwrap().yaml;
    assert!(app.ends_with("  passthroughClaimsWithNoMapping: false\n"));
    format!(
        "{app}  allowedOrigins: [\"{origin}\"]\n---\n{}\n---\n{}\n---\n{}",
        read("account.yaml"),
        read("connection.yaml").replace("https://login.example.com", issuer),
        read("rule-session-name.yaml"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0s_browser_sample_uploads_to_s3_through_rolegate_and_a_foreign_origin_gets_nothing() {
    let bucket = unique("uploads");
    boto3(&bucket, "s3.create_bucket(Bucket=bucket)");

    let now = jiff::Timestamp::now();
    let ca = rolegate::pki::new_ca(now, "auth0 browser test CA").unwrap();
    let serving =
        rolegate::pki::issue_serving(&ca, &["localhost".to_owned(), "127.0.0.1".to_owned()], now)
            .unwrap();
    let chain = format!("{}{}", serving.cert_pem, ca.cert_pem);

    let op = Op::start().await;
    let id_token = op.id_token(json!({
        "sub": "auth0|alice", "email": "alice@example.com", "email_verified": true,
        "groups": ["uploaders"],
    }));
    // Two origins for the same page; the allowed one is bound before rolegate starts.
    let allowed_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_origin = format!("http://{}", allowed_listener.local_addr().unwrap());
    let h = Harness::start_tls(
        &resources(&allowed_origin, &op.url),
        &chain,
        &serving.key_pem,
    )
    .await;
    let port = h.url.rsplit(':').next().unwrap();
    let config = page_files(&format!("localhost:{port}"), &bucket, &id_token);
    let allowed = serve_page(config.clone(), allowed_listener).await;
    let foreign_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign = serve_page(config, foreign_listener).await;
    assert_ne!(foreign, allowed);

    let files = tempfile::tempdir().unwrap();
    let hello = files.path().join("hello.txt");
    std::fs::write(&hello, "uploaded from the browser\n").unwrap();
    let second = files.path().join("second.txt");
    std::fs::write(&second, "must not arrive\n").unwrap();

    let browser = Browser::start(Options {
        trust_spki_sha256: Some(spki_sha256(&ca.cert_pem)),
        ..Options::default()
    })
    .await;

    // The allowed origin: the sample delegates as the page loads, and arms the upload button
    // with the credentials; the person then chooses a file and clicks.
    browser.goto(&format!("{allowed}/")).await;
    eventually("the delegation", || {
        h.metric("rolegate_assertions_signed_total") == 1.0
    })
    .await;
    browser.choose_file("#file-chooser", &hello).await;
    assert_eq!(
        browser.click_until_result("#upload", "#results").await,
        "UPLOADED."
    );
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 1.0);
    let listed = boto3(
        &bucket,
        "for o in s3.list_objects_v2(Bucket=bucket).get('Contents', []): print(o['Key'])\n\
         print(s3.get_object(Bucket=bucket, Key='alice@example.com/hello.txt')['Body'].read().decode(), end='')",
    );
    assert_eq!(
        listed,
        "alice@example.com/hello.txt\nuploaded from the browser\n"
    );

    // The same page from another origin: refused by the server itself, nothing signed, no
    // object.
    let refused_before = refused_delegations(&h);
    browser.goto(&format!("{foreign}/")).await;
    eventually("the refusal", || {
        refused_delegations(&h) == refused_before + 1.0
    })
    .await;
    browser.choose_file("#file-chooser", &second).await;
    let result = browser.text_of("#results").await;
    // The sample's callback gets no credentials; its upload button is never armed.
    assert!(result.starts_with("ERROR! "), "{result}");
    browser.click("#upload").await;
    assert_eq!(refused_delegations(&h), refused_before + 1.0);
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 1.0);
    let listed = boto3(
        &bucket,
        "for o in s3.list_objects_v2(Bucket=bucket).get('Contents', []): print(o['Key'])",
    );
    assert_eq!(listed, "alice@example.com/hello.txt\n");
}

/// Waits until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/delegation` answers with status 403 so far.
fn refused_delegations(h: &Harness) -> f64 {
    h.state
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("rolegate_http_responses_total{"))
        .filter(|l| l.contains("\"/delegation\"") && l.contains("\"403\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
