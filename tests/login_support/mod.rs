//! Sign-in test support: the real OpenID provider (`oidc-provider`) and the local AWS-like
//! service provider (pysaml2) as child processes on loopback, a cookie-keeping HTTP client for
//! driving flows without a browser, and the resources both sign-in tests use.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common;

pub const ACCOUNT: &str = common::ACCOUNT;
pub const PROVIDER_NAME: &str = "rolegate-people";
pub const ADMIN: &str = "arn:aws:iam::123456789012:role/admin";
pub const READER: &str = "arn:aws:iam::123456789012:role/reader";
pub const CLIENT_ID: &str = "rolegate";
pub const CLIENT_SECRET: &str = "op-client-secret-for-tests-only";
/// The public client `rolegate credentials` signs in with (PKCE, loopback redirect).
pub const PUBLIC_CLIENT_ID: &str = "rolegate-cli";
pub const WIKI_SP: &str = "https://wiki.example.test/sp";
pub const WIKI_ACS: &str = "https://wiki.example.test/acs";

pub fn provider_arn() -> String {
    format!("arn:aws:iam::{ACCOUNT}:saml-provider/{PROVIDER_NAME}")
}

/// A child process killed when dropped.
pub struct Peer {
    child: Child,
    /// The JSON line it printed when ready.
    pub ready: serde_json::Value,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` and waits for its ready line; `None` if it exits first.
fn try_start(mut command: Command) -> Option<Peer> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Keep draining: a peer that writes to a closed pipe later (oidc-provider logs notices on
    // stdout the first time a feature is used) would die of EPIPE.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    match serde_json::from_str(&line) {
        Ok(ready) => Some(Peer { child, ready }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

fn start(command: Command) -> Peer {
    let what = format!("{command:?}");
    try_start(command).unwrap_or_else(|| panic!("{what} did not start"))
}

/// A loopback port that is free now, for a peer that must know its address before it starts.
/// Drawn below the kernel's ephemeral range, so that the sockets the tests open meanwhile (which
/// take ephemeral ports) cannot take it first.
pub fn free_port() -> u16 {
    let mut bytes = [0u8; 2];
    loop {
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        let port = 20_000 + u16::from_le_bytes(bytes) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `oidc-provider` on `port` with rolegate's client (redirecting to `callback`) and accounts
/// alice (group readers: two roles) and bob (no role). `None` if the port was taken meanwhile.
pub fn start_op(port: u16, callback: &str) -> Option<Peer> {
    let peers = std::env::var_os("ROLEGATE_PEERS")
        .map_or_else(|| common::repo().join(".peers"), std::path::PathBuf::from);
    let script = peers.join("js/oidc_op.mjs");
    assert!(
        script.exists(),
        "oidc-provider is missing at {}: run `make test` (or tests/peers/install.sh)",
        script.display()
    );
    let config = serde_json::json!({
        "port": port,
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [callback],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }, {
            // A native app on a laptop: any loopback port (RFC 8252), no secret, PKCE.
            "client_id": PUBLIC_CLIENT_ID,
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }],
        "accounts": {
            "alice": {"password": "alice-pw", "claims": {"email": "alice@example.test", "email_verified": true, "name": "Alice Example", "groups": ["readers"]}},
            "bob": {"password": "bob-pw", "claims": {"email": "bob@example.test", "name": "Bob", "groups": ["nobody"]}},
        },
    });
    let mut command = Command::new("node");
    command.arg(script).arg(config.to_string());
    try_start(command)
}

/// The local service provider, configured as AWS (`urn:amazon:webservices`), validating with
/// pysaml2 against the metadata in `metadata` and writing each outcome to `result`.
pub fn start_sp(metadata: &Path, result: &Path) -> Peer {
    let mut command = Command::new(common::venv().join("bin/python"));
    command
        .arg(common::repo().join("tests/peers/sp_server.py"))
        .arg("--idp-metadata")
        .arg(metadata)
        .arg("--result")
        .arg(result);
    start(command)
}

/// A bcrypt hash at the lowest cost (fast tests; production hashes use 10 or more).
pub fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// The resources of the sign-in tests.
/// With `mixup_issuer`, Connection "mixup" names that issuer (see the login test).
pub fn resources(op_issuer: &str, mixup_issuer: Option<&str>, aws_acs: &str) -> String {
    let (connections, mixup) = match mixup_issuer {
        Some(issuer) => (
            "[op, people, mixup]",
            format!(
                r#"---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: mixup}}
spec:
  oidc:
    issuer: {issuer}
    clientId: {CLIENT_ID}
    clientSecretRef: {{name: op-client}}
    scopes: [openid, email, profile, groups]
"#
            ),
        ),
        None => ("[op, people]", String::new()),
    };
    let many: Vec<String> = (0..400).map(|i| format!("group-{i:03}")).collect();
    let users = format!(
        "- {{username: carol, bcryptHash: \"{}\", email: carol@example.test, name: Carol, groups: [readers]}}\n- {{username: dave, bcryptHash: \"{}\", groups: [readers]}}\n- {{username: erin, bcryptHash: \"{}\", groups: [readers, {}]}}\n",
        hash("carol-pw"),
        hash("dave-pw"),
        hash("erin-pw"),
        many.join(", "),
    );
    let users = users
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        r#"
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: aws}}
spec:
  audience: urn:amazon:webservices
  recipient: {aws_acs}
  nameIdentifierProbes: [email]
  mappings: {{name: "https://rolegate.dev/display-name"}}
  connections: {connections}
---
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: wiki}}
spec:
  audience: {WIKI_SP}
  recipient: {WIKI_ACS}
  nameIdentifierFormat: urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress
  nameIdentifierProbes: [email]
  connections: [people]
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {{name: acct}}
spec:
  samlApp: aws
  accountId: "{ACCOUNT}"
  providerName: {PROVIDER_NAME}
  allowedNamespaces: {{matchLabels: {{team: a}}}}
  allowedRoles: ["arn:aws:iam::{ACCOUNT}:role/*"]
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-a, labels: {{team: a}}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: op}}
spec:
  displayName: Example IdP
  oidc:
    issuer: {op_issuer}
    clientId: {CLIENT_ID}
    publicClientId: {PUBLIC_CLIENT_ID}
    clientSecretRef: {{name: op-client}}
    scopes: [openid, email, profile, groups]
{mixup}---
apiVersion: v1
kind: Secret
metadata: {{name: op-client, namespace: rolegate}}
stringData: {{clientSecret: {CLIENT_SECRET}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: people}}
spec:
  displayName: Username and password
  static:
    secretRef: {{name: people}}
---
apiVersion: v1
kind: Secret
metadata: {{name: people, namespace: rolegate}}
stringData:
  users.yaml: |
{users}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: admin, namespace: team-a}}
spec:
  provider: acct
  roleArn: {ADMIN}
  subjects: [{{kind: User, name: alice}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: readers, namespace: team-a}}
spec:
  provider: acct
  roleArn: {READER}
  subjects: [{{kind: Group, name: readers}}]
"#
    )
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// A client that keeps cookies by name (every server here is on 127.0.0.1, where browsers share
/// cookies across ports too) and never follows redirects by itself.
pub struct Agent {
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl Agent {
    pub fn new() -> Self {
        Self::from_address("127.0.0.1")
    }

    /// A client whose connections come from `address` (any 127.0.0.0/8 address on Linux).
    pub fn from_address(address: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(address.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let mut request = request;
        if !self.cookies.is_empty() {
            request = request.header("Cookie", self.cookie_header());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || c.contains("Max-Age=0") || c.contains("expires=Thu, 01 Jan 1970")
            {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap();
        Answer {
            status,
            location,
            set_cookies,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        let request = self.http.get(url);
        self.send(request).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.http.post(url).form(form);
        self.send(request).await
    }

    /// GETs `url` and follows redirects (resolved against `base` when relative) until an answer
    /// that is not one, or until `stop` says a Location is where to stop (returned unfollowed).
    pub async fn follow(&mut self, url: &str, stop: impl Fn(&str) -> bool) -> (String, Answer) {
        let mut url = url.to_owned();
        for _ in 0..20 {
            let answer = self.get(&url).await;
            match &answer.location {
                Some(next) if (300..400).contains(&answer.status) => {
                    let next = reqwest::Url::parse(&url)
                        .unwrap()
                        .join(next)
                        .unwrap()
                        .to_string();
                    if stop(&next) {
                        return (next, answer);
                    }
                    url = next;
                }
                _ => return (url, answer),
            }
        }
        panic!("too many redirects from {url}");
    }
}

/// The value of `name="…" value="…"` in a page.
pub fn form_value(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = start + page[start..].find('"')?;
    Some(
        page[start..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Signs in at the OP's page of `authorize` (its URL) as `user`, and returns the redirect back
/// to rolegate's callback, unfollowed.
pub async fn op_sign_in(agent: &mut Agent, authorize: &str, user: &str, password: &str) -> String {
    op_sign_in_to(agent, authorize, user, password, "/login/callback").await
}

/// [`op_sign_in`] for any client: returns the first redirect whose URL contains `callback`,
/// unfollowed.
pub async fn op_sign_in_to(
    agent: &mut Agent,
    authorize: &str,
    user: &str,
    password: &str,
    callback: &str,
) -> String {
    let (interaction, page) = agent.follow(authorize, |_| false).await;
    assert_eq!(page.status, 200, "OP sign-in page: {}", page.body);
    assert!(interaction.contains("/interaction/"), "{interaction}");
    let answer = agent
        .post(&interaction, &[("login", user), ("password", password)])
        .await;
    assert!(
        (300..400).contains(&answer.status),
        "OP login: {} {}",
        answer.status,
        answer.body
    );
    let next = location(&interaction, &answer);
    let (landed, _) = agent.follow(&next, |u| u.contains(callback)).await;
    assert!(landed.contains(callback), "{landed}");
    landed
}

/// Where a redirect `answer` to a request for `base` points, as an absolute URL.
pub fn location(base: &str, answer: &Answer) -> String {
    let target = answer
        .location
        .as_deref()
        .unwrap_or_else(|| panic!("not a redirect: {} {}", answer.status, answer.body));
    reqwest::Url::parse(base)
        .unwrap()
        .join(target)
        .unwrap()
        .to_string()
}

/// Replaces (or, with `None`, removes) query parameter `name` of `url`.
pub fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .collect();
    {
        let mut q = parsed.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    parsed.to_string()
}

/// The named query parameter of `url`.
pub fn param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
