//! FUZZ ENTRY POINTS, not rolegate's API: one function per parser that takes outside input.
//! Each feeds the bytes to the real parser the way the server does and asserts what must hold
//! for any input. `fuzz/` (cargo-fuzz) and `tests/fuzz_corpora.rs` are the only callers.
//!
//! A broken invariant panics, because that is how libFuzzer learns of a failure; so does a
//! harness that cannot set itself up (no temporary directory, no loopback socket), which must
//! not pass for a clean run.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::login::authn_request::{self, AuthnRequest, RequestError};
use crate::login::flow::{Flow, Identity};
use crate::login::oidc::ProviderClient;
use crate::login::{CookieKey, FLOW_COOKIE, SESSION_COOKIE, SealError};
use crate::saml::AppSettings;
use crate::store::Snapshot;
use crate::store::files::load_text;
use crate::tokens::{Accept, TokenVerifier};
use crate::webhook::Injection;

/// Error messages are bounded well below what an input may hold (a token may have 16 KiB, a
/// request body 64 KiB): every quoted value is truncated.
pub const MESSAGE_LIMIT: usize = 4096;
/// The instant every target runs at.
const NOW_SECONDS: i64 = 1_796_083_200; // 2026-12-01T00:00:00Z
/// The service-account issuer of the fuzzed `kubernetes` Connection.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The key id of the harness's ES256 key.
pub const KID: &str = "fuzz-es256";

/// Fails the run: setup that cannot happen, or a broken invariant.
#[allow(clippy::panic)]
fn fail(what: &str) -> ! {
    panic!("fuzz harness: {what}")
}

fn must<T, E: std::fmt::Debug>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| fail(&format!("{what}: {e:?}")))
}

fn now() -> Timestamp {
    must(Timestamp::from_second(NOW_SECONDS), "the pinned instant")
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    must(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
        "a tokio runtime",
    )
});

fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.block_on(future)
}

/// A scratch directory for this process (the JWKS file of the `kubernetes` Connection).
fn scratch() -> &'static Path {
    static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
        let dir = std::env::temp_dir().join(format!("rolegate-fuzz-{}", std::process::id()));
        must(std::fs::create_dir_all(&dir), "a scratch directory");
        dir
    });
    &DIR
}

/// Runs of characters a token, sealed value or secret is made of (base64url and `.`), of at
/// least 16 characters and holding a digit: what must never be echoed into a message.
fn token_like_runs(input: &[u8]) -> Vec<&str> {
    let mut runs = Vec::new();
    let is_token_char = |b: u8| b.is_ascii_alphanumeric() || b"-_.+/=".contains(&b);
    let mut start = None;
    for (i, &b) in input.iter().chain(std::iter::once(&b' ')).enumerate() {
        match (is_token_char(b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let run = &input[s..i];
                if run.len() >= 16 && run.iter().any(u8::is_ascii_digit) {
                    // ASCII-only, so this never fails; lossy text is only for the debug print.
                    if let Ok(run) = std::str::from_utf8(run) {
                        runs.push(run);
                    }
                }
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// `input` with each `(placeholder, value)` filled in, so that committed seeds can name what a
/// process only learns when it starts (its key, its loopback port).
fn fill(input: &[u8], values: &[(&str, &str)]) -> Vec<u8> {
    let mut out = input.to_vec();
    for (placeholder, value) in values {
        let (placeholder, value) = (placeholder.as_bytes(), value.as_bytes());
        let mut filled = Vec::with_capacity(out.len());
        let mut rest = out.as_slice();
        while let Some(i) = rest
            .windows(placeholder.len())
            .position(|w| w == placeholder)
        {
            filled.extend_from_slice(&rest[..i]);
            filled.extend_from_slice(value);
            rest = &rest[i + placeholder.len()..];
        }
        filled.extend_from_slice(rest);
        out = filled;
    }
    out
}

fn assert_no_echo(message: &str, input: &[u8], what: &str) {
    assert!(
        message.len() <= MESSAGE_LIMIT,
        "{what}: a {}-byte message is longer than {MESSAGE_LIMIT}: {:?}",
        message.len(),
        message.chars().take(300).collect::<String>()
    );
    for run in token_like_runs(input) {
        assert!(
            !message.contains(run),
            "{what}: the message echoes {run:?} from the input: {message:?}"
        );
    }
}

/// The resources every target runs against, read by the real standalone loader.
fn world_yaml(oidc_issuer: &str) -> String {
    format!(
        r#"
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: aws}}
spec: {{}}
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {{name: acct}}
spec:
  samlApp: aws
  accountId: "123456789012"
  providerName: rolegate-fuzz
  allowedNamespaces: {{matchLabels: {{team: a}}}}
  allowedRoles: ["arn:aws:iam::123456789012:role/app-*"]
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-a, labels: {{team: a}}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: k8s}}
spec:
  kubernetes:
    issuer: {ISSUER}
    audiences: [rolegate]
    jwksUri: file:jwks.json
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: op}}
spec:
  oidc:
    issuer: {oidc_issuer}
    clientId: rolegate-web
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: app-reader, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::123456789012:role/app-reader
  subjects: [{{kind: ServiceAccount, name: app}}]
"#
    )
}

fn load_world(oidc_issuer: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    must(
        load_text(
            &mut snapshot,
            Path::new("world.yaml"),
            &world_yaml(oidc_issuer),
        ),
        "the fuzz world's resources",
    );
    snapshot
}

// ---------------------------------------------------------------------------------------------
// Tokens: JWT header and claims, JWKS, discovery.

/// The harness's issuer key (ES256, so that signing every input stays cheap) and its JWKS.
struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    jwks: Value,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = must(
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
            "an ES256 key",
        );
        let key = must(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()),
            "an ES256 key",
        );
        let point = key.public_key().as_ref();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID, "x": x, "y": y,
        }]});
        Self { key, rng, jwks }
    }

    /// `b64(header).b64(claims).sig`, whatever bytes header and claims are.
    fn token(&self, header: &[u8], claims: &[u8]) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = must(
            self.key.sign(&self.rng, signing_input.as_bytes()),
            "an ES256 signature",
        );
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// Whether the JWKS `document` holds this key (the only way a token of it may verify).
    fn is_in(&self, document: &[u8]) -> bool {
        let ours = &self.jwks["keys"][0];
        serde_json::from_slice::<Value>(document)
            .ok()
            .and_then(|d| d.get("keys").and_then(Value::as_array).cloned())
            .is_some_and(|keys| {
                keys.iter()
                    .any(|k| k.get("x") == ours.get("x") && k.get("y") == ours.get("y"))
            })
    }
}

struct JwtWorld {
    signer: Signer,
    verifier: TokenVerifier,
    snapshot: Snapshot,
}

static JWT_WORLD: LazyLock<JwtWorld> = LazyLock::new(|| {
    let signer = Signer::new();
    let jwks = must(serde_json::to_vec(&signer.jwks), "the JWKS");
    must(
        std::fs::write(scratch().join("jwks.json"), jwks),
        "jwks.json",
    );
    JwtWorld {
        signer,
        verifier: TokenVerifier::new(scratch().to_path_buf()),
        // An OpenID issuer nobody listens at: tokens naming it fail at discovery, quickly.
        snapshot: load_world("http://127.0.0.1:9"),
    }
});

fn claims_of(token: &str) -> Option<Value> {
    let part = token.trim().split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?).ok()
}

/// JWT header and claims through `TokenVerifier::verify`, as `/v1/credentials` and
/// `/delegation` call it. The first byte chooses: bit 0 clear, the rest is the token as
/// presented (it can never verify, since the harness's key is made afresh in each process);
/// bit 0 set, the rest is `header JSON` NUL `claims JSON`, which the harness signs with the
/// key the `kubernetes` Connection trusts, so the checks after the signature are reached too.
/// Bit 1 chooses `Accept::Any` (delegation) over `Accept::ServiceAccounts`.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let world = &*JWT_WORLD;
    let signed = mode & 1 == 1;
    let token = if signed {
        let (header, claims) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        world.signer.token(header, claims)
    } else {
        match std::str::from_utf8(rest) {
            Ok(token) => token.to_owned(),
            Err(_) => return,
        }
    };
    let accept = if mode & 2 == 2 {
        Accept::Any
    } else {
        Accept::ServiceAccounts
    };
    match block_on(
        world
            .verifier
            .verify(&token, &world.snapshot, accept, now()),
    ) {
        Ok(verified) => {
            assert!(signed, "an unsigned input verified: {token:?}");
            let claims = claims_of(&token);
            let claim = |name: &str| claims.as_ref().and_then(|c| c.get(name)).cloned();
            assert_eq!(verified.connection, "k8s");
            assert!(verified.is_service_account);
            assert!(verified.service_account().is_some(), "{verified:?}");
            assert_eq!(claim("iss"), Some(json!(ISSUER)));
            assert_eq!(claim("sub"), Some(json!(verified.subject)));
            assert!(verified.audiences.iter().any(|a| a == "rolegate"));
            let exp = claim("exp").and_then(|e| e.as_f64());
            assert!(
                exp.is_some_and(|e| e > NOW_SECONDS as f64),
                "expired token accepted: exp {exp:?}"
            );
            if let Some(nbf) = claim("nbf").and_then(|n| n.as_f64()) {
                assert!(
                    nbf <= (NOW_SECONDS + 30) as f64,
                    "future nbf {nbf} accepted"
                );
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert_no_echo(&message, token.as_bytes(), "token error");
            for part in token.trim().split('.').filter(|p| p.len() >= 16) {
                assert!(
                    !message.contains(part),
                    "the token error echoes a part of the token: {message:?}"
                );
            }
        }
    }
}

/// A JWKS document as a `kubernetes` Connection's `jwksUri` serves it, read by a fresh
/// verifier that then checks a token of the harness's key. The first byte chooses whether the
/// token names its `kid`; `{x}` and `{y}` in the document stand for the key's coordinates.
/// Whatever the document, the token verifies only if the document holds that very key.
pub fn jwks(data: &[u8]) {
    static TOKENS: LazyLock<[String; 2]> = LazyLock::new(|| {
        let claims = json!({
            "iss": ISSUER, "sub": "system:serviceaccount:team-a:app", "aud": ["rolegate"],
            "exp": NOW_SECONDS + 600, "nbf": NOW_SECONDS - 60,
        });
        let claims = must(serde_json::to_vec(&claims), "claims");
        [
            JWT_WORLD.signer.token(
                br#"{"alg":"ES256","typ":"JWT","kid":"fuzz-es256"}"#,
                &claims,
            ),
            JWT_WORLD.signer.token(br#"{"alg":"ES256"}"#, &claims),
        ]
    });
    let Some((&mode, document)) = data.split_first() else {
        return;
    };
    let ours = &JWT_WORLD.signer.jwks["keys"][0];
    let coordinate = |c: &str| ours[c].as_str().unwrap_or_default().to_owned();
    let document = &fill(
        document,
        &[("{x}", &coordinate("x")), ("{y}", &coordinate("y"))],
    );
    let dir = scratch().join("jwks");
    must(std::fs::create_dir_all(&dir), "a JWKS directory");
    must(std::fs::write(dir.join("jwks.json"), document), "jwks.json");
    let verifier = TokenVerifier::new(dir);
    let token = &TOKENS[usize::from(mode & 1)];
    let result = block_on(verifier.verify(token, &JWT_WORLD.snapshot, Accept::Any, now()));
    if let Ok(verified) = result {
        assert!(
            JWT_WORLD.signer.is_in(document),
            "a JWKS without the token's key verified it: {verified:?}"
        );
    }
}

/// A loopback OpenID provider whose discovery document is whatever the current input is, and
/// whose `/jwks` is the harness's real JWKS.
struct Provider {
    issuer: String,
    document: Arc<Mutex<Vec<u8>>>,
    client: ProviderClient,
}

static PROVIDER: LazyLock<Provider> = LazyLock::new(|| {
    let document = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::clone(&document);
    let jwks = must(serde_json::to_vec(&JWT_WORLD.signer.jwks), "the JWKS");
    let listener = must(
        block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        )))),
        "a loopback listener",
    );
    let address = must(listener.local_addr(), "the listener's address");
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let body = served
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                let body = jwks.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
    RUNTIME.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Provider {
        issuer: format!("http://{address}"),
        document,
        client: ProviderClient::default(),
    }
});

/// An OpenID discovery document, served by a loopback provider, read by both readers: the
/// sign-in path's [`ProviderClient::discover`] and the token path (a token from an `oidc`
/// Connection, verified by a fresh verifier that discovers the JWKS from it). `{issuer}` in the
/// document stands for the provider's URL (its port is only known once it listens).
pub fn discovery(data: &[u8]) {
    static OIDC: LazyLock<(Snapshot, String)> = LazyLock::new(|| {
        let issuer = PROVIDER.issuer.clone();
        let claims = json!({
            "iss": issuer, "sub": "ada", "aud": "rolegate-web", "email": "ada@example.com",
            "exp": NOW_SECONDS + 600,
        });
        let claims = must(serde_json::to_vec(&claims), "claims");
        let token = JWT_WORLD
            .signer
            .token(br#"{"alg":"ES256","kid":"fuzz-es256"}"#, &claims);
        (load_world(&issuer), token)
    });
    let provider = &*PROVIDER;
    let data = &fill(data, &[("{issuer}", &provider.issuer)]);
    data.clone_into(
        &mut provider
            .document
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    match block_on(provider.client.discover(&provider.issuer)) {
        Ok(discovery) => assert_eq!(
            discovery.issuer.trim_end_matches('/'),
            provider.issuer,
            "a discovery document naming another issuer was accepted"
        ),
        Err(e) => assert!(e.to_string().len() <= MESSAGE_LIMIT, "{e}"),
    }
    let (snapshot, token) = &*OIDC;
    let verifier = TokenVerifier::new(scratch().join("nowhere"));
    if let Ok(verified) = block_on(verifier.verify(token, snapshot, Accept::Any, now())) {
        assert_eq!(verified.connection, "op");
        let document: Option<Value> = serde_json::from_slice(data).ok();
        let jwks_uri = document
            .as_ref()
            .and_then(|d| d.get("jwks_uri"))
            .and_then(Value::as_str);
        assert_eq!(
            jwks_uri,
            Some(format!("{}/jwks", provider.issuer).as_str()),
            "the token verified with keys from somewhere other than the provider's JWKS"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// `/delegation`.

fn delegation(body: &[u8], content_type: &'static str) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let parsed = crate::server::issue::parse_delegation(&headers, body);
    match parsed {
        Ok(request) => {
            // The same fields, written out canonically, read back the same.
            let canonical = if content_type.starts_with("application/json") {
                // Fields rolegate ignores are skipped unchecked (a lone surrogate in one is
                // fine), so a parsed body need not be a valid JSON value as a whole.
                let Ok(value) = serde_json::from_slice::<Value>(body) else {
                    return;
                };
                must(serde_json::to_vec(&value), "JSON")
            } else {
                let pairs: Vec<(String, String)> = must(
                    serde_urlencoded::from_bytes(body),
                    "a body the parser read is a form",
                );
                must(serde_urlencoded::to_string(&pairs), "a form").into_bytes()
            };
            let again = must(
                crate::server::issue::parse_delegation(&headers, &canonical),
                "the canonical form of a parsed body",
            );
            assert_eq!(format!("{request:?}"), format!("{again:?}"));
        }
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.error, "invalid_request");
            assert_no_echo(&e.description, body, "/delegation refusal");
        }
    }
}

/// A `/delegation` body sent as `application/x-www-form-urlencoded`.
pub fn delegation_form(data: &[u8]) {
    delegation(data, "application/x-www-form-urlencoded");
}

/// A `/delegation` body sent as `application/json`.
pub fn delegation_json(data: &[u8]) {
    delegation(data, "application/json");
}

// ---------------------------------------------------------------------------------------------
// AuthnRequests.

static APP_SETTINGS: LazyLock<AppSettings> = LazyLock::new(|| {
    let snapshot = load_world("http://127.0.0.1:9");
    let app = snapshot.apps.get("aws").cloned();
    must(
        app.ok_or("no SAMLApp aws")
            .and_then(|app| AppSettings::from_app(&app).map_err(|_| "unusable SAMLApp aws")),
        "the SAMLApp's settings",
    )
});

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    must(encoder.write_all(bytes), "deflating");
    must(encoder.finish(), "deflating")
}

fn assert_request_error(e: &RequestError, input: &[u8]) {
    let message = e.to_string();
    match e {
        // These quote (a short, sanitised) issuer, ACS URL or binding on purpose.
        RequestError::UnknownIssuer { .. }
        | RequestError::ForeignAcs { .. }
        | RequestError::Unsupported(_) => assert!(message.len() <= MESSAGE_LIMIT, "{message}"),
        _ => assert_no_echo(&message, input, "SAMLRequest refusal"),
    }
    assert!(
        !message.chars().any(char::is_control),
        "control characters in {message:?}"
    );
}

/// What holds for an AuthnRequest read from `xml`, and its check against the app.
fn authn_request_xml(xml: &str, input: &[u8]) -> Option<AuthnRequest> {
    let request = match authn_request::parse(xml) {
        Ok(request) => request,
        Err(e) => {
            assert_request_error(&e, input);
            return None;
        }
    };
    assert!(!request.id.is_empty() && request.id.len() <= 256);
    assert!(
        request
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)),
        "{:?} is not an xs:ID",
        request.id
    );
    assert!(!request.issuer.is_empty() && request.issuer.trim() == request.issuer);
    let settings = &*APP_SETTINGS;
    match authn_request::check(&request, "aws", settings) {
        Ok(()) => {
            assert_eq!(request.issuer, settings.audience);
            assert!(
                request
                    .acs
                    .as_ref()
                    .is_none_or(|a| *a == settings.recipient)
            );
            assert!(
                request
                    .binding
                    .as_deref()
                    .is_none_or(|b| b == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
            );
        }
        Err(e) => assert_request_error(&e, input),
    }
    Some(request)
}

/// A `SAMLRequest` of the HTTP-Redirect binding, inflate included. The first byte chooses what
/// the rest is: 0, the raw DEFLATE stream (base64-encoded by the harness); 1, the XML (deflated
/// and encoded by the harness, and then it must read back unchanged and parse as it does over
/// HTTP-POST); otherwise, the query parameter's value itself.
pub fn authn_request_redirect(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let saml_request = match mode {
        0 => STANDARD.encode(rest),
        1 => STANDARD.encode(deflate(rest)),
        _ => match std::str::from_utf8(rest) {
            Ok(value) => value.to_owned(),
            Err(_) => return,
        },
    };
    let xml = match authn_request::decode_redirect(&saml_request) {
        Ok(xml) => xml,
        Err(e) => {
            assert_request_error(&e, rest);
            if mode == 1 {
                assert!(
                    rest.len() > 32 * 1024 || std::str::from_utf8(rest).is_err(),
                    "a deflated UTF-8 request under 32 KiB was refused: {e}"
                );
            }
            return;
        }
    };
    assert!(xml.len() <= 32 * 1024);
    if mode == 1 {
        assert_eq!(
            xml.as_bytes(),
            rest,
            "inflate did not give back what was deflated"
        );
    }
    let via_redirect = authn_request_xml(&xml, rest);
    if mode == 1 {
        let via_post = authn_request::decode_post(&STANDARD.encode(rest))
            .ok()
            .and_then(|xml| authn_request::parse(&xml).ok());
        assert_eq!(via_redirect, via_post, "the two bindings disagree");
    }
}

/// A `SAMLRequest` of the HTTP-POST binding. The first byte chooses what the rest is: 0, the
/// XML (base64-encoded by the harness); otherwise, the form field's value itself.
pub fn authn_request_post(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let saml_request = if mode == 0 {
        STANDARD.encode(rest)
    } else {
        match std::str::from_utf8(rest) {
            Ok(value) => value.to_owned(),
            Err(_) => return,
        }
    };
    match authn_request::decode_post(&saml_request) {
        Ok(xml) => {
            assert!(xml.len() <= 32 * 1024);
            if mode == 0 {
                assert_eq!(xml.as_bytes(), rest);
            }
            authn_request_xml(&xml, rest);
        }
        Err(e) => assert_request_error(&e, rest),
    }
}

// ---------------------------------------------------------------------------------------------
// AdmissionReviews.

static ADMISSION_WORLD: LazyLock<Snapshot> = LazyLock::new(|| load_world("http://127.0.0.1:9"));

/// An `AdmissionReview` body as the API server posts it to `/admission/pods`. Every answer
/// allows the pod and echoes the request's uid; a patch only adds (never replaces what the user
/// set), applies to the pod it was computed for, and applying it makes the webhook idempotent.
pub fn admission_review(data: &[u8]) {
    let snapshot = &*ADMISSION_WORLD;
    let injection = Injection::default();
    let Ok((review, _message)) = crate::webhook::review(data, snapshot, &injection) else {
        return;
    };
    let input: Value = must(serde_json::from_slice(data), "a reviewed body is JSON");
    let request = &input["request"];
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = &review["response"];
    assert_eq!(response["uid"], request["uid"]);
    assert_eq!(response["allowed"], true);
    let Some(patch) = response.get("patch").and_then(Value::as_str) else {
        return;
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = must(STANDARD.decode(patch), "the patch is base64");
    let ops: json_patch::Patch = must(serde_json::from_slice(&bytes), "the patch is a JSON Patch");
    assert!(!ops.0.is_empty());
    let mut pod = request["object"].clone();
    for op in &ops.0 {
        let json_patch::PatchOperation::Add(add) = op else {
            fail(&format!("the webhook may only add, not {op:?}"));
        };
        let path = add.path.to_string();
        if !path.ends_with("/-") {
            let existing = pod.pointer(&path);
            assert!(
                existing.is_none_or(Value::is_null),
                "the patch replaces {path}, which the user set: {existing:?}"
            );
        }
        must(
            json_patch::patch(&mut pod, std::slice::from_ref(op)),
            "the patch applies",
        );
    }
    let mut again = input.clone();
    again["request"]["object"] = pod;
    let body = must(serde_json::to_vec(&again), "JSON");
    let (review, message) = must(
        crate::webhook::review(&body, snapshot, &injection),
        "the patched pod is reviewed",
    );
    assert!(
        review["response"].get("patch").is_none(),
        "not idempotent: the patched pod is patched again ({message})"
    );
}

// ---------------------------------------------------------------------------------------------
// Sealed cookies.

struct Sealed {
    key: CookieKey,
    /// (cookie name, sealed value) of a real flow and a real session.
    values: Vec<(&'static str, String)>,
}

static SEALED: LazyLock<Sealed> = LazyLock::new(|| {
    let key = must(CookieKey::from_material(&[0x5a; 32]), "a cookie key");
    let flow = Flow {
        app: "aws".into(),
        relay_state: Some("https://console.aws.amazon.com/".into()),
        request: Some(AuthnRequest {
            id: "_abc123".into(),
            issuer: "https://signin.aws.amazon.com/saml".into(),
            acs: None,
            binding: None,
        }),
        oidc: None,
        confirm: false,
    };
    let identity = Identity {
        connection: "people".into(),
        user: "ada".into(),
        email: Some("ada@example.com".into()),
        name: None,
        groups: vec!["admins".into()],
        claims: std::collections::BTreeMap::new(),
        csrf: "0123456789abcdef0123456789abcdef".into(),
    };
    let expires = must(Timestamp::from_second(NOW_SECONDS + 600), "expiry");
    let values = vec![
        (
            FLOW_COOKIE,
            must(key.seal(FLOW_COOKIE, &flow, expires), "seal"),
        ),
        (
            SESSION_COOKIE,
            must(key.seal(SESSION_COOKIE, &identity, expires), "seal"),
        ),
    ];
    Sealed { key, values }
});

fn open_as(key: &CookieKey, name: &str, header: &str) -> Option<Result<(), SealError>> {
    let sealed = crate::login::cookie(header, name).filter(|v| !v.is_empty())?;
    assert!(!sealed.contains(';'));
    Some(if name == FLOW_COOKIE {
        key.open::<Flow>(name, sealed, now()).map(drop)
    } else {
        key.open::<Identity>(name, sealed, now()).map(drop)
    })
}

/// The `Cookie` header of a sign-in. First byte even: the rest is the header as sent, and no
/// cookie in it opens (values are sealed with a key the input cannot know). Odd: the rest edits
/// a real sealed flow or session value (byte 0 chooses which and under which name it is sent,
/// then (operation, position, byte) triples), and the edited value opens only if it is still the
/// same ciphertext under the right name, and never reports `Expired` for a changed one.
pub fn sealed_cookie(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sealed = &*SEALED;
    if mode & 1 == 0 {
        let header = String::from_utf8_lossy(rest);
        for name in [FLOW_COOKIE, SESSION_COOKIE] {
            if let Some(opened) = open_as(&sealed.key, name, &header) {
                assert!(opened.is_err(), "a forged {name} cookie opened: {header:?}");
            }
        }
        return;
    }
    let Some((&choice, edits)) = rest.split_first() else {
        return;
    };
    let (sealed_for, original) = &sealed.values[usize::from(choice & 1)];
    let sent_as = if choice & 2 == 0 {
        *sealed_for
    } else if *sealed_for == FLOW_COOKIE {
        SESSION_COOKIE
    } else {
        FLOW_COOKIE
    };
    let mut value = original.clone().into_bytes();
    for edit in edits.chunks_exact(3) {
        let position = usize::from(edit[1]) * value.len().max(1) / 256;
        match edit[0] % 4 {
            0 if position < value.len() => value[position] = edit[2],
            1 => value.insert(position.min(value.len()), edit[2]),
            2 if position < value.len() => {
                value.remove(position);
            }
            3 => value.truncate(position),
            _ => {}
        }
    }
    let value = String::from_utf8_lossy(&value).into_owned();
    let header = format!("theme=dark; {sent_as}={value}");
    let Some(opened) = open_as(&sealed.key, sent_as, &header) else {
        return;
    };
    let same_ciphertext = URL_SAFE_NO_PAD.decode(value.trim()).ok()
        == URL_SAFE_NO_PAD.decode(original.as_bytes()).ok();
    match opened {
        Ok(()) => assert!(
            same_ciphertext && sent_as == *sealed_for,
            "an altered or renamed cookie opened: {sent_as}={value}"
        ),
        Err(SealError::Expired) => fail(&format!(
            "an altered cookie decrypted (it reported Expired): {value}"
        )),
        Err(SealError::Invalid) => assert!(
            !(same_ciphertext && sent_as == *sealed_for),
            "a genuine cookie did not open"
        ),
        Err(SealError::Key(e)) => fail(&format!("opening reported a key error: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The standalone YAML loader.

/// One file of a standalone config directory (`rolegate serve --config DIR`). A load error
/// never reproduces the file's text (which may hold Secret values), and what loads writes back
/// out as documents that load to the same snapshot.
pub fn standalone_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut snapshot = Snapshot::default();
    match load_text(&mut snapshot, Path::new("fuzz.yaml"), text) {
        Ok(()) => {
            let rewritten = rewrite(&snapshot);
            let mut again = Snapshot::default();
            must(
                load_text(&mut again, Path::new("again.yaml"), &rewritten),
                "what was loaded, written back out",
            );
            assert_eq!(format!("{snapshot:?}"), format!("{again:?}"));
        }
        Err(e) => {
            let message = e.to_string();
            // A line of `key: value` whose value looks like a secret (a long run of key
            // characters with a digit) must not come back in the message.
            for line in text.lines().map(str::trim) {
                let secret_like =
                    line.contains(':') && !token_like_runs(line.as_bytes()).is_empty();
                assert!(
                    !secret_like || !message.contains(line),
                    "the load error quotes the file's line {line:?}: {message}"
                );
            }
        }
    }
}

/// Every object of `snapshot` as a stream of JSON documents (JSON is YAML).
fn rewrite(snapshot: &Snapshot) -> String {
    let mut docs: Vec<Value> = Vec::new();
    let mut push = |v: Result<Value, serde_json::Error>| docs.push(must(v, "serialising"));
    snapshot
        .apps
        .values()
        .for_each(|o| push(serde_json::to_value(o)));
    snapshot
        .providers
        .values()
        .for_each(|o| push(serde_json::to_value(o)));
    snapshot
        .connections
        .values()
        .for_each(|o| push(serde_json::to_value(o)));
    snapshot
        .mappings
        .iter()
        .for_each(|o| push(serde_json::to_value(o)));
    snapshot
        .secrets
        .values()
        .for_each(|o| push(serde_json::to_value(o)));
    for (name, labels) in &snapshot.namespaces {
        push(Ok(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
        ));
    }
    for ((namespace, name), role) in &snapshot.service_account_roles {
        push(Ok(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": name, "namespace": namespace,
            "annotations": {crate::webhook::ROLE_ANNOTATION: role}}}),
        ));
    }
    docs.iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<String>()
}
