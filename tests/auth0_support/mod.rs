//! What the Auth0-migration tests share: an OpenID issuer on loopback standing in for the
//! organisation's identity provider (discovery, JWKS, and id_tokens it signs), and the
//! resources a person needs to reach a role through `/delegation`.
#![allow(dead_code)]

use axum::http::header;
use serde_json::json;

/// The client (audience) of the people's id_tokens.
pub const CLIENT_ID: &str = "web";

/// An OpenID issuer on loopback: a discovery document and a JWKS.
pub struct Op {
    pub url: String,
    pub key: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Op {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = rolegate::dev::generate_key().unwrap();
        let jwks = rolegate::dev::jwks(&key).unwrap().to_string();
        let discovery = json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/jwks"),
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let d = discovery.clone();
                    async move { axum::Json(d) }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let body = jwks.clone();
                    async move { ([(header::CONTENT_TYPE, "application/json")], body) }
                }),
            );
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            key,
            _task: task,
        }
    }

    /// An id_token for client `web` with `claims` over a valid `iss`, `aud`, `exp` and `iat`.
    pub fn id_token(&self, claims: serde_json::Value) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut all = json!({"iss": self.url, "aud": CLIENT_ID, "iat": now, "exp": now + 600});
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(rolegate::dev::key_id(&self.key).unwrap());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.key.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &all, &key).unwrap()
    }
}

/// An STS endpoint that keeps every `SAMLAssertion` it is sent and refuses the call, so the
/// assertion the server really built can be checked.
pub async fn capturing_sts() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(
            move |form: axum::extract::Form<std::collections::HashMap<String, String>>| {
                let kept = std::sync::Arc::clone(&kept);
                async move {
                    if let Some(assertion) = form.get("SAMLAssertion") {
                        kept.lock().unwrap().push(assertion.clone());
                    }
                    (
                        axum::http::StatusCode::FORBIDDEN,
                        [("content-type", "text/xml")],
                        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>captured</Message></Error><RequestId>1</RequestId></ErrorResponse>"#,
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}
