//! A strict Kubernetes API server for tests: real HTTPS on 127.0.0.1 with its own CA, the REST
//! API of the kinds rolegate uses, authentication with ServiceAccount tokens it signs, RBAC
//! against the Roles and bindings it stores, and mutating admission webhooks called over TLS.
//! No Kubernetes API server can be installed on the machines this suite runs on, so the suite
//! brings its own; it follows the Kubernetes API conventions strictly, because a lenient fake
//! would hide the very bugs it exists to find (issue 10).
//!
//! Which Kubernetes documentation each behaviour follows is said in each module:
//!
//! | module | behaviour | grounded in |
//! |---|---|---|
//! | [`store`] | uid, creationTimestamp, cluster-wide resourceVersion, generation (also bumped when deletion starts), 409 Conflict/AlreadyExists, 404, 422, status subresource, no-op writes, dry run, finalizers, deletionTimestamp, garbage collection (background, orphan, foreground), namespace lifecycle (404 for a missing one, 403 while terminating, protected namespaces), DELETE answers, the bounded change history, lists at a past resourceVersion | API conventions (metadata, spec and status, concurrency control and consistency), "API concepts", "Finalizers", "Garbage collection", "Namespaces" |
//! | [`kinds`] | per-kind strategies and validation: names, labels, annotation and data size limits, Secrets (`stringData`, TLS keys), ConfigMaps, Namespaces, CRDs (names, structural schema, status), Pod specs (in Pods and workload templates; workload selectors), Services, webhook configurations (via `admission`), RBAC bindings, Events (two versions, one storage) | each type's registry strategy and validation; "Events" (events.k8s.io/v1 reference) |
//! | [`schema`] | CRD validation with a JSON Schema validator, defaulting, pruning, `fieldValidation`, the structural-schema rules for a new CRD | "Extend the Kubernetes API with CustomResourceDefinitions" (structural schema, field pruning, defaulting, validation), "API concepts": field validation |
//! | [`typed`] | unknown fields of built-in kinds dropped, and refused with `fieldValidation=Strict` | "API concepts": field validation |
//! | [`watch`] | watch from a resourceVersion, 410 Expired, 504 for a future version, bookmarks, sendInitialEvents, selectors on events, Table and metadata-only events | "API concepts": efficient detection of changes, watch bookmarks, streaming lists, resource versions |
//! | [`selector`] | label and field selectors | "Labels and selectors", "Field selectors" |
//! | [`patch`] | merge, JSON and strategic merge patch | "Update API objects in place using kubectl patch", RFC 7386, RFC 6902 |
//! | [`table`] | Table output with printer columns | "API concepts": receiving resources as Tables; CRD additionalPrinterColumns |
//! | [`discovery`] | /api, /apis (also aggregated, apidiscovery.k8s.io/v2), resource lists, /openapi/v3, /version | "The Kubernetes API": discovery API (aggregated and unaggregated), OpenAPI interface definition |
//! | [`http`] | request info, authn → authz → admission → storage order, Status responses, warnings, lists with limit/continue and resourceVersionMatch, PartialObjectMetadata, SelfSubjectReview and SelfSubjectAccessReview, user impersonation, the 3 MiB body limit | "Controlling access to the Kubernetes API", "Authenticating": user impersonation, "Admission controllers" (ServiceAccount, NamespaceLifecycle, OwnerReferencesPermissionEnforcement), "Warnings", "API concepts": retrieving large results in chunks |
//! | [`protobuf`] | protobuf request bodies of kubectl's typed commands | "API concepts": protobuf encoding |
//! | `auth`, `rbac`, `admission` | tokens, TokenRequest/TokenReview, RBAC, webhooks | see those modules |
//!
//! What is not implemented: server-side apply (415; rolegate does not use it and the tests use
//! client-side `kubectl apply`), protobuf answers and protobuf bodies of other kinds (clients
//! accept and send JSON for them), `managedFields`, CEL validation rules, CRD version conversion
//! other than `None`, graceful pod deletion (pods are never scheduled here, so they are deleted
//! at once, as unscheduled pods are).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod admission;
pub mod auth;
pub mod discovery;
pub mod http;
pub mod kinds;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod store;
pub mod table;
pub mod typed;
pub mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::Value;

pub use auth::Status;

/// A `Status` object with `details`.
pub fn status_with(code: u16, reason: &str, message: &str, details: Option<Value>) -> Status {
    let status = Status::new(code, reason, message);
    match details {
        Some(d) => status.with_details(d),
        None => status,
    }
}

/// A `Status` object.
pub fn status(code: u16, reason: &str, message: &str) -> Status {
    Status::new(code, reason, message)
}

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// CRDs loaded at start (plus any later `kubectl apply` of a CRD).
    pub crds_dir: PathBuf,
    /// Where a Service reference `name.namespace.svc:port` in a webhook configuration really
    /// listens, e.g. ("rolegate", "rolegate-server", 443) -> 127.0.0.1:PORT.
    pub services: HashMap<(String, String, u16), SocketAddr>,
}

/// Who a client or kubeconfig authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `system:masters`: bypasses RBAC.
    Admin,
    /// A ServiceAccount's token (the ServiceAccount must exist: a token of a missing one is
    /// refused, as in a cluster).
    ServiceAccount { namespace: String, name: String },
}

/// One request served.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub user: String,
    pub groups: Vec<String>,
    pub attrs: rbac::Attributes,
    pub code: u16,
    /// The RBAC rule that allowed it, e.g. "ClusterRole/x rule 2 via ClusterRoleBinding/x".
    pub allowed_by: Option<String>,
    pub user_agent: String,
}

/// A running test API server.
#[derive(Debug)]
pub struct TestApiServer {
    shared: Arc<http::Shared>,
    url: String,
    ca_pem: String,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

fn load_crds(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut crds = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
    {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        crds.extend(
            docs.into_iter()
                .filter(|d| d["kind"] == "CustomResourceDefinition"),
        );
    }
    crds
}

impl TestApiServer {
    /// Starts the server on 127.0.0.1 (a free port) with a new CA, the CRDs of
    /// `options.crds_dir`, and the bootstrap RBAC policy of a fresh cluster.
    ///
    /// # Panics
    /// The CRDs do not load or the listener cannot be opened (test setup failures).
    pub async fn start(options: Options) -> TestApiServer {
        let now = jiff::Timestamp::now();
        let ca = rolegate::pki::new_ca(now, "test-apiserver-ca").expect("CA");
        let names: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let serving = rolegate::pki::issue_serving(&ca, &names, now).expect("serving certificate");
        let store = store::Store::new(&ca.cert_pem, now);
        let admin = store::WriteOptions {
            now,
            dry_run: false,
            field_validation: "Strict".into(),
            legacy_event: false,
        };
        let crd_info = store
            .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("CRD resource");
        for crd in load_crds(&options.crds_dir) {
            if let Err(e) = store.create(&crd_info, "", crd, &admin) {
                panic!("CRD from {}: {}", options.crds_dir.display(), e.body);
            }
        }
        for object in rbac::bootstrap_policy() {
            let resource = match object["kind"].as_str() {
                Some("ClusterRole") => "clusterroles",
                Some("ClusterRoleBinding") => "clusterrolebindings",
                Some("Role") => "roles",
                _ => "rolebindings",
            };
            if let Some(info) = store.resource("rbac.authorization.k8s.io", "v1", resource) {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let _ = store.create(&info, &ns, object, &admin);
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("local address");
        let url = format!("https://{address}");
        let shared = Arc::new(http::Shared {
            store,
            tokens: auth::Tokens::new(),
            services: options.services,
            audit: Mutex::new(Vec::new()),
            address: address.to_string(),
            url: url.clone(),
            owner_references_enforced: std::sync::atomic::AtomicBool::new(false),
        });
        let tls = tls_config(&serving.cert_pem, &serving.key_pem);
        let app = axum::Router::new()
            .fallback(http::handle)
            // http::handle reads the body itself, with the API server's limit.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls)
            .expect("server")
            .handle(handle.clone());
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        TestApiServer {
            shared,
            url,
            ca_pem: ca.cert_pem,
            handle,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The CA that signed the serving certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The store (for tests that look at state directly).
    pub fn store(&self) -> &store::Store {
        &self.shared.store
    }

    /// Drops the watch history (etcd compaction): a watch from any earlier resourceVersion then
    /// gets 410 Gone.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// A bearer token for `who`. For a ServiceAccount, a token of the API server's audience
    /// valid for an hour; the ServiceAccount must exist.
    ///
    /// # Panics
    /// The ServiceAccount does not exist.
    pub fn token(&self, who: &Identity) -> String {
        match who {
            Identity::Admin => self.shared.tokens.admin_token(),
            Identity::ServiceAccount { namespace, name } => {
                let sa = self
                    .shared
                    .store
                    .lookup_get("", "serviceaccounts", Some(namespace), name)
                    .unwrap_or_else(|| panic!("ServiceAccount {namespace}/{name} does not exist"));
                let uid = sa["metadata"]["uid"].as_str().unwrap_or_default();
                self.shared.tokens.service_account_token(
                    namespace,
                    name,
                    uid,
                    &[self.shared.tokens.api_audience().to_owned()],
                    3600,
                    None,
                    jiff::Timestamp::now().as_second(),
                )
            }
        }
    }

    /// The kubeconfig text for `who` and the user name in it.
    fn kubeconfig_text(&self, who: &Identity) -> (String, String) {
        let token = self.token(who);
        let user = match who {
            Identity::Admin => "admin".to_owned(),
            Identity::ServiceAccount { namespace, name } => {
                format!("system-serviceaccount-{namespace}-{name}")
            }
        };
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n    namespace: default\ncurrent-context: test\n",
            self.url
        );
        (user, text)
    }

    /// A kubeconfig file (written into `dir`) for `who`, with the server URL, its CA and a
    /// bearer token.
    ///
    /// # Panics
    /// The file cannot be written, or the ServiceAccount does not exist.
    pub fn kubeconfig(&self, dir: &Path, who: &Identity) -> PathBuf {
        let (user, text) = self.kubeconfig_text(who);
        let path = dir.join(format!("kubeconfig-{user}"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A kube client for `who`, configured from the same kubeconfig a process would get.
    ///
    /// # Panics
    /// The client cannot be built.
    pub async fn client(&self, who: &Identity) -> kube::Client {
        let (_, text) = self.kubeconfig_text(who);
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    /// Turns the OwnerReferencesPermissionEnforcement admission plugin on or off (off by
    /// default, as in kube-apiserver; on in OpenShift): setting `blockOwnerDeletion: true`
    /// then needs `update` on the owner's `finalizers` subresource. The rules such a check
    /// used are appended to the request's `allowed_by` in the audit, after `; `.
    pub fn enforce_owner_references(&self, on: bool) {
        self.shared
            .owner_references_enforced
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every request served so far, in order.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.shared
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn tls_config(cert_pem: &str, key_pem: &str) -> axum_server::tls_rustls::RustlsConfig {
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> = pem::parse_many(cert_pem)
        .expect("certificate PEM")
        .into_iter()
        .map(|p| rustls::pki_types::CertificateDer::from(p.into_contents()))
        .collect();
    let key_der = pem::parse(key_pem).expect("key PEM").into_contents();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        key_der,
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("TLS certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config))
}
