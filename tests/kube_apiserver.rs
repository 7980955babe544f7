//! The test API server's own tests: what a real API server answers, checked with kube's own
//! client and with the real kubectl (`$ROLEGATE_PEERS/bin/kubectl`, installed by
//! `tests/peers/install.sh`). Each test starts its own server (milliseconds).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "kube/mod.rs"]
mod kube_server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube_server::{Identity, Options, TestApiServer};
use serde_json::{Value, json};

fn options() -> Options {
    Options {
        crds_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"),
        services: std::collections::HashMap::new(),
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rolegate.dev", "v1alpha1", kind),
        plural,
    )
}

fn mappings(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource("RoleMapping", "rolemappings"))
}

fn samlapps(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("SAMLApp", "samlapps"))
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

fn mapping(name: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "rolegate.dev/v1alpha1", "kind": "RoleMapping",
        "metadata": {"name": name},
        "spec": {"provider": "prod", "roleArn": "arn:aws:iam::111122223333:role/reader",
                 "subjects": [{"kind": "ServiceAccount", "name": "api"}]},
    }))
}

fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn json_of(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap()
}

/// The real kubectl, or None (with a note) when the peers are not installed.
fn kubectl_path() -> PathBuf {
    let peers = std::env::var("ROLEGATE_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peers"));
    let path = peers.join("bin/kubectl");
    assert!(
        path.exists(),
        "{} is missing: run tests/peers/install.sh (or set ROLEGATE_PEERS)",
        path.display()
    );
    path
}

/// Runs kubectl with `kubeconfig`; (success, stdout, stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", kubeconfig.parent().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finished")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn admin(server: &TestApiServer) -> kube::Client {
    server.client(&Identity::Admin).await
}

async fn namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn starts_and_serves_discovery() {
    let server = TestApiServer::start(options()).await;
    let client = server.client(&Identity::Admin).await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.minor, "35");
}

#[tokio::test]
async fn create_sets_metadata_and_conflicts_are_409() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let api = mappings(&client, "team");
    let created = api
        .create(&PostParams::default(), &mapping("m"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(
        meta.uid.as_deref().is_some_and(|u| u.len() == 36),
        "{meta:?}"
    );
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let rv: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    // A dry run answers what would be stored and stores nothing.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let would = api.create(&dry, &mapping("dry")).await.unwrap();
    assert!(would.metadata.uid.is_some() && would.metadata.resource_version.is_none());
    assert_eq!(api_error(api.get("dry").await).code, 404);
    // AlreadyExists.
    let status = api_error(api.create(&PostParams::default(), &mapping("m")).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        status.message,
        r#"rolemappings.rolegate.dev "m" already exists"#
    );

    // A change: a higher resourceVersion, cluster-wide (a Secret write in between counts).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "team");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let patched = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"provider": "other"}})),
        )
        .await
        .unwrap();
    let rv2: u64 = patched
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv + 1, "{rv} -> {rv2}");
    assert_eq!(patched.metadata.generation, Some(2));

    // A PUT with the stale resourceVersion, and a merge patch carrying it: 409 Conflict.
    let mut stale = created.clone();
    stale.data["spec"]["provider"] = json!("stale");
    let status = api_error(api.replace("m", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
    let status = api_error(
        api.patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": rv.to_string()}, "spec": {"provider": "x"}}),
            ),
        )
        .await,
    );
    assert_eq!(status.code, 409);
    assert_eq!(
        api.get("m").await.unwrap().data["spec"]["provider"],
        "other"
    );

    // 404 for a missing object, as a Status naming it.
    let status = api_error(api.get("nope").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        r#"rolemappings.rolegate.dev "nope" not found"#
    );
    // A namespace that does not exist: 404 for the namespace.
    let status = api_error(
        mappings(&client, "ghost")
            .create(&PostParams::default(), &mapping("m"))
            .await,
    );
    assert_eq!(status.message, r#"namespaces "ghost" not found"#);
    // A Secret's stringData is stored as data, base64.
    let s = secrets.get("s").await.unwrap();
    assert_eq!(s.data.unwrap()["k"].0, b"v");
    assert!(s.string_data.is_none());
}

#[tokio::test]
async fn invalid_custom_resources_get_422_naming_the_schema_error() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let api = mappings(&client, "team");
    let mut bad = mapping("bad");
    bad.data["spec"]["roleArn"] = json!("not-an-arn");
    bad.data["spec"]["subjects"][0]["kind"] = json!("Robot");
    bad.data["spec"]["sessionDuration"] = json!("long");
    let status = api_error(api.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .starts_with(r#"RoleMapping.rolegate.dev "bad" is invalid: ["#),
        "{}",
        status.message
    );
    let causes: Vec<(String, String, String)> = status
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| (c.field, c.reason, c.message))
        .collect();
    assert!(
        causes.iter().any(|(f, r, m)| f == "spec.roleArn"
            && r == "FieldValueInvalid"
            && m.contains("spec.roleArn in body should match '^arn:aws")),
        "{causes:?}"
    );
    assert!(causes.iter().any(|(f, r, m)| f == "spec.subjects[0].kind" && r == "FieldValueNotSupported"
        && m == r#"Unsupported value: "Robot": supported values: "ServiceAccount", "Group", "User""#), "{causes:?}");
    assert!(
        causes
            .iter()
            .any(|(f, r, _)| f == "spec.sessionDuration" && r == "FieldValueTypeInvalid"),
        "{causes:?}"
    );
    // A required field missing.
    let mut missing = mapping("missing");
    missing.data["spec"]
        .as_object_mut()
        .unwrap()
        .remove("provider");
    let status = api_error(api.create(&PostParams::default(), &missing).await);
    let details = status.details.unwrap();
    assert_eq!(details.causes[0].field, "spec.provider");
    assert_eq!(details.causes[0].reason, "FieldValueRequired");
    // Out of range.
    let mut short = mapping("short");
    short.data["spec"]["sessionDuration"] = json!(60);
    let status = api_error(api.create(&PostParams::default(), &short).await);
    assert!(
        status
            .message
            .contains("should be greater than or equal to 900"),
        "{}",
        status.message
    );
    // Nothing was stored.
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // An invalid update changes nothing either.
    api.create(&PostParams::default(), &mapping("ok"))
        .await
        .unwrap();
    let status = api_error(
        api.patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"roleArn": "x"}})),
        )
        .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        api.get("ok").await.unwrap().data["spec"]["roleArn"],
        "arn:aws:iam::111122223333:role/reader"
    );
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_defaults_applied() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let api = mappings(&client, "team");
    let mut m = mapping("m");
    m.data["spec"]["bogus"] = json!({"deep": 1});
    m.data["spec"]["subjects"][0]["extra"] = json!(true);
    m.data["topLevel"] = json!("x");
    m.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
    let created = api.create(&PostParams::default(), &m).await.unwrap();
    let v = json_of(&created);
    assert!(v["spec"].get("bogus").is_none(), "{v}");
    assert!(v["spec"]["subjects"][0].get("extra").is_none(), "{v}");
    assert!(v.get("topLevel").is_none(), "{v}");
    // Defaults of the schema.
    assert_eq!(v["spec"]["sessionDuration"], 3600);
    assert_eq!(v["spec"]["revokeOnDelete"], true);
    assert_eq!(v["metadata"]["labels"]["a"], "b");
    // fieldValidation=Strict refuses them instead (what kubectl sends by default).
    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..PatchParams::default()
    };
    let status = api_error(
        api.patch("m", &strict, &Patch::Merge(json!({"spec": {"bogus": 1}})))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert!(
        status.message.contains(r#"unknown field "spec.bogus""#),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let api = mappings(&client, "team");
    let mut m = mapping("m");
    m.data["status"] = json!({"providerArn": "set-on-create"});
    let created = api.create(&PostParams::default(), &m).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "a create drops status: {:?}",
        created.data
    );

    // /status: only status changes, even if the patch also touches spec and labels.
    let written = api
        .patch_status("m", &PatchParams::default(), &Patch::Merge(json!({
            "metadata": {"labels": {"x": "y"}},
            "spec": {"provider": "changed"},
            "status": {"providerArn": "arn:aws:iam::111122223333:saml-provider/p", "observedGeneration": 1},
        })))
        .await
        .unwrap();
    assert_eq!(
        written.data["status"]["providerArn"],
        "arn:aws:iam::111122223333:saml-provider/p"
    );
    assert_eq!(written.data["spec"]["provider"], "prod");
    assert!(written.metadata.labels.is_none());
    assert_eq!(
        written.metadata.generation,
        Some(1),
        "a status write is no spec change"
    );

    // The object: status in the body is ignored; spec changes bump the generation.
    let mut current = api.get("m").await.unwrap();
    current.data["status"]["providerArn"] = json!("overwritten?");
    current.data["spec"]["provider"] = json!("other");
    let replaced = api
        .replace("m", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(
        replaced.data["status"]["providerArn"],
        "arn:aws:iam::111122223333:saml-provider/p"
    );
    assert_eq!(replaced.data["spec"]["provider"], "other");
    assert_eq!(replaced.metadata.generation, Some(2));
    let patched = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"providerArn": "again?"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data["status"]["providerArn"],
        "arn:aws:iam::111122223333:saml-provider/p"
    );
    assert_eq!(
        patched.metadata.resource_version, replaced.metadata.resource_version,
        "a no-op write is not written"
    );
    // Metadata-only changes keep the generation.
    let labelled = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    // The status of a built-in kind with the subresource: JSON patch on /status of a Namespace.
    let status = api_error(
        api.patch(
            "m",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/spec/provider", "value": "not-this"},
                    {"op": "replace", "path": "/spec/provider", "value": "x"}
                ]))
                .unwrap(),
            ),
        )
        .await,
    );
    assert_eq!(status.code, 422, "a failed JSON patch test is 422");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let api = mappings(&client, "team");
    let mut m = mapping("m");
    m.metadata.finalizers = Some(vec!["rolegate.dev/revoke".into()]);
    api.create(&PostParams::default(), &m).await.unwrap();
    let deleted = api.delete("m", &DeleteParams::default()).await.unwrap();
    let still = deleted.left().expect("the object, not a Status");
    assert!(still.metadata.deletion_timestamp.is_some());
    assert_eq!(still.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        still.metadata.generation,
        Some(2),
        "setting deletionTimestamp bumps the generation"
    );
    // A new finalizer is refused while it is being deleted.
    let status = api_error(
        api.patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["rolegate.dev/revoke", "new"]}})),
        )
        .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        status.message
    );
    // Spec changes are still allowed; removing the last finalizer deletes the object.
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"provider": "x"}})),
    )
    .await
    .unwrap();
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["rolegate.dev/revoke"]},
                {"op": "remove", "path": "/metadata/finalizers"}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get("m").await).code, 404);
}

#[tokio::test]
async fn watch_delivers_added_modified_deleted_and_bookmarks() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let api = mappings(&client, "team");
    let first = api
        .create(&PostParams::default(), &mapping("before"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    let params = WatchParams::default().labels("watched=yes").timeout(5);
    let params = WatchParams {
        bookmarks: true,
        ..params
    };
    let mut stream = api.watch(&params, &rv).await.unwrap().boxed();
    let mut m = mapping("m");
    m.metadata.labels = Some([("watched".to_owned(), "yes".to_owned())].into());
    api.create(&PostParams::default(), &m).await.unwrap();
    api.create(&PostParams::default(), &mapping("unlabelled"))
        .await
        .unwrap();
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"provider": "p2"}})),
    )
    .await
    .unwrap();
    // Leaving the selector is a DELETED for this watch.
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watched": "no"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watched": "yes"}}})),
    )
    .await
    .unwrap();
    api.delete("m", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut bookmark_rv = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        match event {
            WatchEvent::Added(o) => seen.push(("ADDED", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                bookmark_rv = Some(b.metadata.resource_version);
                break;
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    let names: Vec<(&str, &str)> = seen.iter().map(|(k, n)| (*k, n.as_str())).collect();
    assert_eq!(
        names,
        [
            ("ADDED", "m"),
            ("MODIFIED", "m"),
            ("DELETED", "m"),
            ("ADDED", "m"),
            ("DELETED", "m")
        ]
    );
    let bookmark: u64 = bookmark_rv
        .expect("a bookmark within a second or two")
        .parse()
        .unwrap();
    assert!(
        bookmark >= rv.parse::<u64>().unwrap() + 6,
        "bookmark {bookmark} after the changes"
    );

    // A watch from a compacted resourceVersion: one ERROR event with 410 Expired.
    server.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // A resourceVersion from the future: 504 Too large resource version.
    let future = (server.store().current_rv() + 100).to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &future)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (504, "Timeout")),
        other => panic!("expected 504, got {other:?}"),
    }
    // kube's watcher recovers from it by relisting; a reflector sees the current state.
    let writer =
        kube::runtime::reflector::store::Writer::new(resource("RoleMapping", "rolemappings"));
    let reader = writer.as_reader();
    let watcher = kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default());
    let running = tokio::spawn(
        kube::runtime::WatchStreamExt::reflect(watcher, writer).for_each(|_| async {}),
    );
    reader.wait_until_ready().await.unwrap();
    let names: Vec<String> = reader
        .state()
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Streaming lists (sendInitialEvents): the initial events end with a bookmark.
    let streaming =
        kube::runtime::reflector::store::Writer::new(resource("RoleMapping", "rolemappings"));
    let streamed = streaming.as_reader();
    let config = kube::runtime::watcher::Config::default().streaming_lists();
    let watcher = kube::runtime::watcher(api.clone(), config);
    let running_streaming = tokio::spawn(
        kube::runtime::WatchStreamExt::reflect(watcher, streaming).for_each(|_| async {}),
    );
    tokio::time::timeout(Duration::from_secs(5), streamed.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(streamed.state().len(), 2);
    running_streaming.abort();
    api.create(&PostParams::default(), &mapping("later"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while reader.state().len() != 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    running.abort();
}

#[tokio::test]
async fn selectors_namespaces_and_garbage_collection() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "team");
    let apps = samlapps(&client);
    let app = apps
        .create(&PostParams::default(), &object(json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "metadata": {"name": "aws"}, "spec": {}})))
        .await
        .unwrap();
    let owner = json!([{"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "name": "aws",
                        "uid": app.metadata.uid.clone().unwrap(), "controller": true}]);
    for (name, type_, labels) in [
        ("tls", "kubernetes.io/tls", json!({})),
        (
            "owned",
            "Opaque",
            json!({"app.kubernetes.io/managed-by": "rolegate"}),
        ),
    ] {
        let mut s =
            json!({"metadata": {"name": name, "labels": labels}, "type": type_, "data": {}});
        if name == "owned" {
            s["metadata"]["ownerReferences"] = owner.clone();
        } else {
            s["data"] = json!({"tls.crt": "", "tls.key": ""});
        }
        secrets
            .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<k8s_openapi::api::core::v1::Secret>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect()
    };
    assert_eq!(
        names(
            secrets
                .list(&ListParams::default().fields("type=kubernetes.io/tls"))
                .await
                .unwrap()
        ),
        ["tls"]
    );
    assert_eq!(
        names(
            secrets
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=rolegate"))
                .await
                .unwrap()
        ),
        ["owned"]
    );
    assert_eq!(
        names(
            secrets
                .list(&ListParams::default().labels("!app.kubernetes.io/managed-by"))
                .await
                .unwrap()
        ),
        ["tls"]
    );
    assert_eq!(
        names(
            secrets
                .list(&ListParams::default().fields("metadata.name=owned"))
                .await
                .unwrap()
        ),
        ["owned"]
    );
    // An unsupported field label is 400, as in a cluster.
    match secrets
        .list(&ListParams::default().fields("data.x=1"))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(
            (s.code, s.message.as_str()),
            (400, "field label not supported: data.x")
        ),
        other => panic!("{other:?}"),
    }
    // An owner reference to a uid that does not exist: collected at once, as the garbage
    // collector would.
    let orphan = json!({"metadata": {"name": "orphan", "ownerReferences": [{"apiVersion": "rolegate.dev/v1alpha1",
        "kind": "SAMLApp", "name": "aws", "uid": "00000000-0000-0000-0000-000000000000"}]}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(orphan).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(api_error(secrets.get("orphan").await).code, 404);
    // Deleting the owner collects what it owns.
    apps.delete("aws", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        names(secrets.list(&ListParams::default()).await.unwrap()),
        ["tls"]
    );
    // Deleting a namespace deletes what is in it; the namespace goes once it is empty.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    match namespaces.get("team").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("{other:?}"),
    }
    match secrets.get("tls").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kubectl_applies_prints_columns_and_waits_for_a_condition() {
    let server = TestApiServer::start(options()).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path(), &Identity::Admin);
    let manifests = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n\
        apiVersion: rolegate.dev/v1alpha1\nkind: SAMLApp\nmetadata: {name: aws}\nspec: {}\n---\n\
        apiVersion: rolegate.dev/v1alpha1\nkind: RoleMapping\nmetadata: {name: m, namespace: team}\n\
        spec: {provider: prod, roleArn: 'arn:aws:iam::111122223333:role/reader', subjects: [{kind: ServiceAccount, name: api}]}\n";
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", "-"], Some(manifests)).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("samlapp.rolegate.dev/aws created"), "{out}");
    // A built-in kind applied again with a change: kubectl sends a strategic merge patch.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team, labels: {a: one}}\ndata: {k: v1, gone: x}\n";
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", "-"], Some(cm)).await;
    assert!(ok, "{out}{err}");
    let cm2 = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team, labels: {a: two}}\ndata: {k: v2}\n";
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", "-"], Some(cm2)).await;
    assert!(ok && out.contains("configmap/c configured"), "{out}{err}");
    let (ok, out, err) = kubectl(&kc, &["get", "cm", "c", "-n", "team", "-o", "json"], None).await;
    assert!(ok, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        c["data"],
        json!({"k": "v2"}),
        "the key dropped from the manifest is removed"
    );
    assert_eq!(c["metadata"]["labels"]["a"], "two");
    // An unknown field of a built-in kind: refused under kubectl's default strict validation.
    let typo =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: team}\ndataa: {k: v}\n";
    let (ok, _, err) = kubectl(&kc, &["apply", "-f", "-"], Some(typo)).await;
    assert!(
        !ok && err.contains(r#"strict decoding error: unknown field "dataa""#),
        "{err}"
    );
    // Applying again with a change: a merge patch for the custom resource.
    let changed = manifests.replace("provider: prod", "provider: staging");
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", "-"], Some(&changed)).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("rolemapping.rolegate.dev/m configured"),
        "{out}"
    );
    assert!(out.contains("samlapp.rolegate.dev/aws unchanged"), "{out}");
    // An invalid one: kubectl shows the server's 422.
    let invalid = changed.replace("'arn:aws:iam::111122223333:role/reader'", "nope");
    let (ok, _, err) = kubectl(&kc, &["apply", "-f", "-"], Some(&invalid)).await;
    assert!(!ok);
    assert!(
        err.contains(r#"The RoleMapping "m" is invalid"#) && err.contains("spec.roleArn"),
        "{err}"
    );
    // An unknown field: kubectl's default --validate=strict is the server's fieldValidation=Strict.
    let unknown = changed.replace("spec: {}", "spec: {bogus: 1}");
    let (ok, _, err) = kubectl(&kc, &["apply", "-f", "-"], Some(&unknown)).await;
    assert!(!ok);
    assert!(err.contains(r#"unknown field "spec.bogus""#), "{err}");

    // Printer columns, server-side.
    let (ok, out, err) = kubectl(&kc, &["get", "samlapps"], None).await;
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ISSUER", "READY", "AGE"]);
    let (ok, out, err) = kubectl(&kc, &["get", "rmap", "-n", "team"], None).await;
    assert!(ok, "{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..3],
        ["m", "arn:aws:iam::111122223333:role/reader", "staging"]
    );

    // kubectl wait: blocks until the controller (here the test) sets the condition.
    let client = admin(&server).await;
    let waiting = {
        let kc = kc.clone();
        tokio::spawn(async move {
            kubectl(
                &kc,
                &[
                    "wait",
                    "--for=condition=Ready",
                    "samlapp/aws",
                    "--timeout=20s",
                ],
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "kubectl wait returned before the condition was set"
    );
    samlapps(&client)
        .patch_status("aws", &PatchParams::default(), &Patch::Merge(json!({"status": {
            "issuer": "urn:rolegate:aws", "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KeyReady", "message": "ok",
                            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}})))
        .await
        .unwrap();
    let (ok, out, err) = waiting.await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("samlapp.rolegate.dev/aws condition met"),
        "{out}"
    );
    // kubectl get --watch: the watch events come as Table rows too.
    let mut watching = tokio::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&kc)
        .args([
            "get",
            "rmap",
            "-n",
            "team",
            "--watch",
            "--output-watch-events",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    mappings(&client, "team")
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"provider": "watched"}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    watching.start_kill().unwrap();
    let watched = watching.wait_with_output().await.unwrap();
    let watched = String::from_utf8_lossy(&watched.stdout);
    let modified: Vec<&str> = watched
        .lines()
        .find(|l| l.starts_with("MODIFIED"))
        .unwrap_or_else(|| panic!("no MODIFIED row in {watched}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        modified[..4],
        [
            "MODIFIED",
            "m",
            "arn:aws:iam::111122223333:role/reader",
            "watched"
        ],
        "{watched}"
    );
    let (_, out, _) = kubectl(&kc, &["get", "samlapps", "--no-headers"], None).await;
    let row: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(row[..3], ["aws", "urn:rolegate:aws", "True"]);
}

/// rolegate's own Lease leader election against the server: one holder, a standby that
/// waits, and a stale write that loses with 409.
#[tokio::test]
async fn rolegates_lease_election_sees_conflicts() {
    use rolegate::controller::leader::{Attempt, LeaseLock};
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "rolegate").await;
    let ttl = Duration::from_secs(15);
    let a = LeaseLock::new(client.clone(), "rolegate", "rolegate-controller", "a", ttl);
    let b = LeaseLock::new(client.clone(), "rolegate", "rolegate-controller", "b", ttl);
    let now = jiff::Timestamp::now();
    assert_eq!(a.try_acquire_or_renew(now).await.unwrap(), Attempt::Held);
    assert_eq!(
        b.try_acquire_or_renew(now).await.unwrap(),
        Attempt::HeldBy("a".into())
    );
    assert_eq!(a.try_acquire_or_renew(now).await.unwrap(), Attempt::Held);
    // A standby takes over only after the lease ran out.
    let later = now + jiff::SignedDuration::from_secs(20);
    assert_eq!(b.try_acquire_or_renew(later).await.unwrap(), Attempt::Held);
    assert_eq!(
        a.try_acquire_or_renew(later).await.unwrap(),
        Attempt::HeldBy("b".into())
    );
    // Two writers racing on one read: the second replace carries a stale resourceVersion.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "rolegate");
    let read = leases.get("rolegate-controller").await.unwrap();
    let mut first = read.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let mut second = read.clone();
    second.spec.as_mut().unwrap().holder_identity = Some("d".into());
    leases
        .replace("rolegate-controller", &PostParams::default(), &first)
        .await
        .unwrap();
    match leases
        .replace("rolegate-controller", &PostParams::default(), &second)
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                r#"Operation cannot be fulfilled on leases.coordination.k8s.io "rolegate-controller": the object has been modified; please apply your changes to the latest version and try again"#
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The agent's startup-taint removal (a JSON patch with a `test` op) against the server.
#[tokio::test]
async fn rolegates_node_taint_patch_applies_once() {
    use rolegate::agent::node::{StartupTaint, remove_once};
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"taints": [
            {"key": "other", "effect": "NoSchedule"},
            {"key": "rolegate.dev/agent-not-ready", "effect": "NoSchedule"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let taint = StartupTaint {
        node: "n1".into(),
        key: "rolegate.dev/agent-not-ready".into(),
        effect: "NoSchedule".into(),
    };
    assert!(remove_once(client.clone(), &taint).await.unwrap());
    let node = nodes.get("n1").await.unwrap();
    let keys: Vec<String> = node
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, ["other"]);
    assert!(!remove_once(client.clone(), &taint).await.unwrap());
}

/// kube's event Recorder (what the controller publishes with): a create, then a merge patch of
/// the series; an Event without the required fields is 422.
#[tokio::test]
async fn recorder_events_are_stored_and_validated() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let m = mappings(&client, "team")
        .create(&PostParams::default(), &mapping("m"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "rolegate".into(),
            instance: Some("pod-1".into()),
        },
    );
    let reference = kube::Resource::object_ref(&m, &resource("RoleMapping", "rolemappings"));
    let event = Event {
        type_: EventType::Normal,
        reason: "Accepted".into(),
        note: Some("ok".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "team");
    let list = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        list[0].regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("m")
    );
    let status = api_error(
        Api::<DynamicObject>::namespaced_with(client.clone(), "team", &ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&()))
            .create(&PostParams::default(), &object(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "type": "Normal"})))
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("reportingController: Required value"),
        "{}",
        status.message
    );

    // One storage, two versions: core/v1 shows the same Event, and kubectl describe lists it.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "team");
    let listed = core
        .list(
            &ListParams::default().fields("involvedObject.name=m,involvedObject.kind=RoleMapping"),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].message.as_deref(), Some("ok"));
    assert_eq!(listed[0].reporting_component.as_deref(), Some("rolegate"));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path(), &Identity::Admin);
    let (ok, out, err) = kubectl(&kc, &["describe", "rolemapping", "m", "-n", "team"], None).await;
    assert!(ok, "{err}");
    let events = out.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events.contains("Accepted") && events.contains("ok"),
        "{out}"
    );
}

/// A client for a bearer token (not from the server's kubeconfig helper).
async fn client_with_token(server: &TestApiServer, token: &str) -> kube::Client {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{}', certificate-authority-data: {}}}}}]\nusers: [{{name: u, user: {{token: '{token}'}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n",
        server.url(),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, server.ca_pem())
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Every request is authenticated and authorised: a bad token is 401, a ServiceAccount
/// without a rule gets Kubernetes' 403 message, a Role and RoleBinding then allow exactly that,
/// and the audit log names the rule.
#[tokio::test]
async fn requests_are_authenticated_and_authorised() {
    use k8s_openapi::api::core::v1::Secret;
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let bad = client_with_token(&server, "not-a-token").await;
    match Api::<Secret>::namespaced(bad, "team")
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized")),
        other => panic!("{other:?}"),
    }
    let app = Identity::ServiceAccount {
        namespace: "team".into(),
        name: "default".into(),
    };
    let sa_client = server.client(&app).await;
    let secrets = Api::<Secret>::namespaced(sa_client.clone(), "team");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                r#"secrets is forbidden: User "system:serviceaccount:team:default" cannot list resource "secrets" in API group "" in the namespace "team""#
            );
        }
        other => panic!("{other:?}"),
    }
    let rbac = |kind: &str, plural: &str| {
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            "team",
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind),
                plural,
            ),
        )
    };
    rbac("Role", "roles")
        .create(&PostParams::default(), &object(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "read-secrets"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]})))
        .await
        .unwrap();
    rbac("RoleBinding", "rolebindings")
        .create(&PostParams::default(), &object(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "read-secrets"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "team"}]})))
        .await
        .unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
    // list is allowed, get is not.
    match secrets.get("x").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("{other:?}"),
    }
    let audit = server.audit();
    let mine: Vec<(u16, String, Option<String>)> = audit
        .iter()
        .filter(|e| e.user == "system:serviceaccount:team:default")
        .map(|e| (e.code, e.attrs.verb.clone(), e.allowed_by.clone()))
        .collect();
    assert_eq!(mine.len(), 3, "{mine:?}");
    assert_eq!((mine[0].0, mine[0].1.as_str()), (403, "list"));
    assert_eq!((mine[1].0, mine[1].1.as_str()), (200, "list"));
    assert!(
        mine[1]
            .2
            .as_deref()
            .is_some_and(|r| r.contains("read-secrets")),
        "{mine:?}"
    );
    assert_eq!(mine[2].0, 403);
}

/// Pod CREATE: the ServiceAccount admission plugin as in a cluster, and TokenRequest /
/// TokenReview through the API.
#[tokio::test]
async fn pods_get_service_account_credentials_and_tokens_review() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    let pod = |name: &str, sa: Option<&str>| -> Pod {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}});
        if let Some(sa) = sa {
            p["spec"]["serviceAccountName"] = json!(sa);
        }
        serde_json::from_value(p).unwrap()
    };
    let created = pods
        .create(&PostParams::default(), &pod("p1", None))
        .await
        .unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(created.metadata.generation, Some(1));
    let volume = &spec.volumes.unwrap()[0];
    assert!(volume.name.starts_with("kube-api-access-"), "{volume:?}");
    let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        mount.mount_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    // A ServiceAccount that does not exist: 403 from admission.
    match pods
        .create(&PostParams::default(), &pod("p2", Some("ghost")))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains(r#"serviceaccount "ghost" not found"#),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    // TokenRequest bound to the pod, then TokenReview of it.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": ["rolegate"], "expirationSeconds": 600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": created.metadata.uid.clone().unwrap()}}}))
    .unwrap();
    let issued = sas
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued.status.unwrap().token;
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review: TokenReview =
        serde_json::from_value(json!({"spec": {"token": token, "audiences": ["rolegate"]}}))
            .unwrap();
    let reviewed = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    assert_eq!(
        reviewed.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:team:default")
    );
    // Deleting the pod invalidates its token.
    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    let reviewed = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(reviewed.authenticated, Some(true), "{reviewed:?}");
}

/// With OwnerReferencesPermissionEnforcement on, a `blockOwnerDeletion` owner reference needs
/// `update` on the owner's `finalizers`; the rule that allowed it shows in the audit.
#[tokio::test]
async fn owner_reference_enforcement_needs_the_finalizers_rule() {
    use k8s_openapi::api::core::v1::Secret;
    let server = TestApiServer::start(options()).await;
    server.enforce_owner_references(true);
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let app = samlapps(&client)
        .create(&PostParams::default(), &object(json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "metadata": {"name": "aws"}, "spec": {}})))
        .await
        .unwrap();
    let cluster_rbac = |kind: &str, plural: &str| {
        Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind),
                plural,
            ),
        )
    };
    let mut rules = vec![json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]})];
    let role = |rules: &Vec<Value>| {
        object(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "writer"}, "rules": rules}),
        )
    };
    cluster_rbac("ClusterRole", "clusterroles")
        .create(&PostParams::default(), &role(&rules))
        .await
        .unwrap();
    cluster_rbac("ClusterRoleBinding", "clusterrolebindings")
        .create(&PostParams::default(), &object(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "writer"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "writer"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "team"}]})))
        .await
        .unwrap();
    let sa = server
        .client(&Identity::ServiceAccount {
            namespace: "team".into(),
            name: "default".into(),
        })
        .await;
    let secrets: Api<Secret> = Api::namespaced(sa, "team");
    let owned = |name: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "rolegate.dev/v1alpha1",
            "kind": "SAMLApp", "name": "aws", "uid": app.metadata.uid.clone().unwrap(), "controller": true, "blockOwnerDeletion": true}]}}))
        .unwrap()
    };
    match secrets.create(&PostParams::default(), &owned("s1")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains("cannot set blockOwnerDeletion"),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    rules.push(json!({"apiGroups": ["rolegate.dev"], "resources": ["samlapps/finalizers"], "verbs": ["update"]}));
    let mut updated = role(&rules);
    updated.metadata.resource_version = None;
    cluster_rbac("ClusterRole", "clusterroles")
        .replace("writer", &PostParams::default(), &updated)
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &owned("s1"))
        .await
        .unwrap();
    let entry = server
        .audit()
        .into_iter()
        .rev()
        .find(|e| e.attrs.verb == "create" && e.attrs.resource == "secrets")
        .unwrap();
    assert_eq!(entry.code, 201);
    assert_eq!(
        entry.allowed_by.as_deref(),
        Some(
            "ClusterRole/writer rule 0 via ClusterRoleBinding/writer; ClusterRole/writer rule 1 via ClusterRoleBinding/writer"
        )
    );
}

/// Not a test: serves until killed, for trying clients by hand
/// (`SERVE_DIR=/tmp/x cargo test --test kube_apiserver serve_by_hand -- --ignored`; the admin
/// kubeconfig is written to `$SERVE_DIR/kubeconfig-admin`).
#[tokio::test]
#[ignore = "serves until killed"]
async fn serve_by_hand() {
    let server = TestApiServer::start(options()).await;
    let dir = PathBuf::from(std::env::var("SERVE_DIR").unwrap());
    let path = server.kubeconfig(&dir, &Identity::Admin);
    println!("kubeconfig: {}", path.display());
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// kubectl's typed generators send protobuf; the four kinds they make here are decoded.
#[tokio::test]
async fn kubectl_create_generators_work() {
    let server = TestApiServer::start(options()).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path(), &Identity::Admin);
    for args in [
        &["create", "namespace", "team"][..],
        &[
            "create",
            "configmap",
            "c",
            "-n",
            "team",
            "--from-literal=a=b",
        ],
        &[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            "team",
            "--from-literal=k=v",
        ],
        &["create", "serviceaccount", "app", "-n", "team"],
        &["label", "namespace", "team", "tier=web"],
    ] {
        let (ok, out, err) = kubectl(&kc, args, None).await;
        assert!(ok, "kubectl {args:?}: {out}{err}");
    }
    let client = admin(&server).await;
    let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get("team")
        .await
        .unwrap();
    let labels = ns.metadata.labels.unwrap();
    assert_eq!(labels["tier"], "web");
    assert_eq!(labels["kubernetes.io/metadata.name"], "team");
    assert_eq!(ns.spec.unwrap().finalizers.unwrap(), ["kubernetes"]);
    let s = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "team")
        .get("s")
        .await
        .unwrap();
    assert_eq!(s.data.unwrap()["k"].0, b"v");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let c = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "team")
        .get("c")
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["a"], "b");
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client, "team")
        .get("app")
        .await
        .unwrap();
    // kubectl get of built-ins prints their columns.
    let (ok, out, _) = kubectl(&kc, &["get", "secret", "s", "-n", "team"], None).await;
    assert!(ok);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"]);
}

/// `kubectl apply` of the CRDs (what a cluster admin does): served at once, Established for
/// `kubectl wait`, applied again unchanged, and a CRD not named `plural.group` is refused.
#[tokio::test]
async fn kubectl_applies_crds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestApiServer::start(Options {
        crds_dir: dir.path().join("none"),
        ..options()
    })
    .await;
    let kc = server.kubeconfig(dir.path(), &Identity::Admin);
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/rolegate/crds");
    let crds = crds.to_str().unwrap();
    let (ok, out, err) = kubectl(&kc, &["get", "samlapps"], None).await;
    assert!(
        !ok && err.contains("the server doesn't have a resource type \"samlapps\""),
        "{out}{err}"
    );
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", crds], None).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kubectl(
        &kc,
        &[
            "wait",
            "--for=condition=Established",
            "crd/samlapps.rolegate.dev",
            "--timeout=5s",
        ],
        None,
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", crds], None).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/samlapps.rolegate.dev unchanged"
        ),
        "{out}"
    );
    let (ok, out, err) = kubectl(&kc, &["get", "samlapps"], None).await;
    assert!(ok, "{out}{err}");
    // The name must be plural.group.
    let bad = std::fs::read_to_string(format!("{crds}/samlapps.rolegate.dev.yaml"))
        .unwrap()
        .replace("name: samlapps.rolegate.dev", "name: wrong.rolegate.dev");
    let (ok, _, err) = kubectl(&kc, &["apply", "-f", "-"], Some(&bad)).await;
    assert!(
        !ok && err.contains("must be spec.names.plural+\".\"+spec.group"),
        "{err}"
    );
    // A schema that is not structural is refused, naming the node.
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n\
        spec: {group: example.com, scope: Namespaced, names: {plural: widgets, kind: Widget},\n\
        versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, properties: {spec: {properties: {size: {type: integer}}}}}}}]}\n";
    let (ok, _, err) = kubectl(&kc, &["apply", "-f", "-"], Some(crd)).await;
    assert!(
        !ok && err.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value"
        ),
        "{err}"
    );
}

/// The built-in validation a chart or an operator can trip over: a TLS Secret without its
/// keys, a webhook without sideEffects or with a one-segment name, a RoleBinding whose roleRef
/// changes, a Pod without containers.
#[tokio::test]
async fn built_in_kinds_are_validated() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let dynamic = |group: &str, version: &str, kind: &str, plural: &str, ns: Option<&str>| {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        match ns {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        }
    };
    let causes = |status: kube::core::Status| -> Vec<String> {
        assert_eq!(status.code, 422, "{status:?}");
        status
            .details
            .unwrap()
            .causes
            .into_iter()
            .map(|c| c.field)
            .collect()
    };
    let secrets = dynamic("", "v1", "Secret", "secrets", Some("team"));
    let status = api_error(
        secrets
            .create(
                &PostParams::default(),
                &object(
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"},
                "type": "kubernetes.io/tls", "data": {"tls.crt": ""}}),
                ),
            )
            .await,
    );
    assert_eq!(causes(status), ["data[tls.key]"]);
    let hooks = dynamic(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        None,
    );
    let status = api_error(
        hooks
            .create(&PostParams::default(), &object(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "h"}, "webhooks": [{"name": "short", "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {"name": "s", "namespace": "team"}}, "timeoutSeconds": 60}]})))
            .await,
    );
    assert_eq!(
        causes(status),
        [
            "webhooks[0].name",
            "webhooks[0].sideEffects",
            "webhooks[0].timeoutSeconds"
        ]
    );
    let bindings = dynamic(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        Some("team"),
    );
    let binding = |role: &str| {
        object(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}, "subjects": []}),
        )
    };
    bindings
        .create(&PostParams::default(), &binding("a"))
        .await
        .unwrap();
    let status = api_error(
        bindings
            .replace("b", &PostParams::default(), &binding("b"))
            .await,
    );
    assert_eq!(causes(status), ["roleRef"]);
    let pods = dynamic("", "v1", "Pod", "pods", Some("team"));
    let status = api_error(
        pods.create(&PostParams::default(), &object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}})))
            .await,
    );
    assert_eq!(causes(status), ["spec.containers"]);
    // A Deployment whose selector misses its template, with a bad port, env name and quantity.
    let deployments = dynamic("apps", "v1", "Deployment", "deployments", Some("team"));
    let status = api_error(
        deployments
            .create(&PostParams::default(), &object(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 70000}],
                    "env": [{"name": "1BAD", "value": "x"}], "resources": {"limits": {"memory": "lots"}}}]}}}})))
            .await,
    );
    assert_eq!(
        causes(status),
        [
            "spec.template.metadata.labels",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "spec.template.spec.containers[0].env[0].name",
            "spec.template.spec.containers[0].resources.limits[memory]",
        ]
    );
    let services = dynamic("", "v1", "Service", "services", Some("team"));
    let status = api_error(
        services
            .create(
                &PostParams::default(),
                &object(
                    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                "spec": {"ports": [{"port": 443}, {"port": 0, "name": "b"}]}}),
                ),
            )
            .await,
    );
    assert_eq!(causes(status), ["spec.ports[0].name", "spec.ports[1].port"]);
    // Size limits: annotations 256 KiB, Secret data 1 MiB, a request body 3 MiB.
    let big = "x".repeat(300 * 1024);
    let status = api_error(
        secrets
            .create(
                &PostParams::default(),
                &object(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "a", "annotations": {"big": big}}})),
            )
            .await,
    );
    assert_eq!(causes(status), ["metadata.annotations"]);
    let mb = "y".repeat(1024 * 1024 + 1);
    let status = api_error(
        secrets
            .create(
                &PostParams::default(),
                &object(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "b"}, "stringData": {"k": mb}})),
            )
            .await,
    );
    assert_eq!(causes(status), ["data"]);
    let huge = "z".repeat(3 * 1024 * 1024 + 1);
    match secrets
        .create(
            &PostParams::default(),
            &object(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "c"}, "stringData": {"k": huge}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(
            (s.code, s.message.as_str()),
            (413, "Request entity too large: limit is 3145728")
        ),
        other => panic!("{other:?}"),
    }
}

/// DELETE answers as the registries do: the object for custom resources and Pods, a Success
/// Status for Secrets; `default` may not be deleted; a create carrying a resourceVersion fails.
#[tokio::test]
async fn delete_answers_and_create_preconditions() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let answer = secrets.delete("s", &DeleteParams::default()).await.unwrap();
    assert!(
        answer.is_right(),
        "a Secret delete answers a Status: {answer:?}"
    );
    answer.map_right(|status| {
        assert_eq!(
            status.status,
            Some(kube::core::response::StatusSummary::Success)
        );
        assert_eq!(
            status.details.unwrap().uid,
            created.metadata.uid.clone().unwrap()
        );
    });
    let api = mappings(&client, "team");
    api.create(&PostParams::default(), &mapping("m"))
        .await
        .unwrap();
    assert!(
        api.delete("m", &DeleteParams::default())
            .await
            .unwrap()
            .is_left()
    );
    match Api::<Namespace>::all(client.clone())
        .delete("default", &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(
            (s.code, s.message.as_str()),
            (
                403,
                r#"namespaces "default" is forbidden: this namespace may not be deleted"#
            )
        ),
        other => panic!("{other:?}"),
    }
    let mut with_rv = secret.clone();
    with_rv.metadata.resource_version = Some("5".into());
    match secrets.create(&PostParams::default(), &with_rv).await {
        Err(kube::Error::Api(s)) => assert!(
            s.message
                .contains("resourceVersion should not be set on objects to be created"),
            "{}",
            s.message
        ),
        other => panic!("{other:?}"),
    }
}

/// Metadata-only requests (rolegate's index watches ServiceAccounts as
/// `PartialObjectMeta`): PartialObjectMetadata objects and lists, no spec or secrets.
#[tokio::test]
async fn metadata_only_lists_and_watches() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::core::PartialObjectMeta;
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "app",
        "annotations": {"rolegate.dev/role": "reader"}}, "automountServiceAccountToken": false}))
        .unwrap(),
    )
    .await
    .unwrap();
    let meta: Api<PartialObjectMeta<ServiceAccount>> = Api::namespaced(client.clone(), "team");
    let one = meta.get("app").await.unwrap();
    assert_eq!(
        one.metadata.annotations.unwrap()["rolegate.dev/role"],
        "reader"
    );
    let list = meta.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert_eq!(list.items.len(), 2, "default and app");
    // Through the raw request: nothing but metadata.
    let raw = client
        .request_text(
            http::Request::get("/api/v1/namespaces/team/serviceaccounts/app")
                .header(
                    "Accept",
                    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
                )
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["kind"], "PartialObjectMetadata");
    assert!(raw.get("automountServiceAccountToken").is_none(), "{raw}");
    // A reflector over metadata, as rolegate's index runs it.
    let writer =
        kube::runtime::reflector::store::Writer::<PartialObjectMeta<ServiceAccount>>::default();
    let reader = writer.as_reader();
    let watcher = kube::runtime::watcher(meta, kube::runtime::watcher::Config::default());
    let running = tokio::spawn(
        kube::runtime::WatchStreamExt::reflect(watcher, writer).for_each(|_| async {}),
    );
    reader.wait_until_ready().await.unwrap();
    sas.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"rolegate.dev/role": "writer"}}})),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let role = reader
                .state()
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some("app"))
                .and_then(|s| {
                    s.metadata
                        .annotations
                        .as_ref()?
                        .get("rolegate.dev/role")
                        .cloned()
                });
            if role.as_deref() == Some("writer") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    running.abort();
}

/// A path whose scope is not the resource's, an unknown resource or subresource: 404 with
/// "the server could not find the requested resource"; an unserved verb: 405.
#[tokio::test]
async fn paths_outside_a_resources_scope_are_404() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    for (method, path, code) in [
        ("GET", "/api/v1/secrets/x", 404),
        ("POST", "/api/v1/secrets", 404),
        ("GET", "/api/v1/namespaces/team/nodes", 404),
        (
            "GET",
            "/apis/rolegate.dev/v1alpha1/namespaces/team/samlapps",
            404,
        ),
        ("GET", "/api/v1/namespaces/team/secrets/x/log", 404),
        ("GET", "/apis/rolegate.dev/v1/samlapps", 404),
        ("GET", "/apis/authentication.k8s.io/v1/tokenreviews", 405),
        ("GET", "/api/v1/secrets", 200),
    ] {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(b"{}".to_vec())
            .unwrap();
        let answer = client.request_text(request).await;
        let got = match &answer {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        assert_eq!(got, code, "{method} {path}: {answer:?}");
        if code == 404 {
            let Err(kube::Error::Api(s)) = answer else {
                unreachable!()
            };
            assert_eq!(
                s.message, "the server could not find the requested resource",
                "{path}"
            );
        }
    }
}

/// Paginated lists are consistent: the second page is served from the snapshot of the first,
/// whatever changed meanwhile; `resourceVersionMatch=Exact` lists a past state; a continue
/// token older than the history is 410.
#[tokio::test]
async fn paginated_lists_are_consistent() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    for name in ["a", "b", "c", "d"] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let names = |items: &[ConfigMap]| -> Vec<String> {
        items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect()
    };
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first.items), ["a", "b"]);
    let token = first.metadata.continue_.clone().unwrap();
    let at = first.metadata.resource_version.clone().unwrap();
    // Meanwhile: c deleted, e created, d changed.
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "e"}})).unwrap(),
    )
    .await
    .unwrap();
    cms.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    let rest = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&rest.items), ["c", "d", "kube-root-ca.crt"]);
    assert!(rest.items[1].data.is_none(), "d as it was");
    assert_eq!(rest.metadata.resource_version.as_deref(), Some(at.as_str()));
    assert!(rest.metadata.continue_.is_none());
    // The same past state by resourceVersionMatch=Exact; the present without it.
    let exact = cms
        .list(
            &ListParams::default()
                .at(&at)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(
        names(&exact.items),
        ["a", "b", "c", "d", "kube-root-ca.crt"]
    );
    let now = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&now.items), ["a", "b", "d", "e", "kube-root-ca.crt"]);
    server.compact();
    assert_eq!(
        api_error(
            cms.list(&ListParams::default().continue_token(&token))
                .await
        )
        .code,
        410
    );
}

/// kube-runtime's `finalizer()` (what rolegate's RoleMapping and IAMProvider reconcilers use):
/// its JSON patches add the finalizer (a `test` of the absent list against null), and remove
/// it on deletion with a `test` of the list, after which the object is gone.
#[tokio::test]
async fn kube_runtime_finalizer_helper_works() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let api = mappings(&client, "team");
    api.create(&PostParams::default(), &mapping("m"))
        .await
        .unwrap();
    let step = |api: Api<DynamicObject>| async move {
        let current = std::sync::Arc::new(api.get("m").await.unwrap());
        finalizer(&api, "rolegate.dev/revoke", current, |event| async move {
            match event {
                Event::Apply(_) | Event::Cleanup(_) => Ok::<_, kube::Error>(Action::await_change()),
            }
        })
        .await
    };
    step(api.clone()).await.unwrap();
    let with = api.get("m").await.unwrap();
    assert_eq!(
        with.metadata.finalizers.as_deref(),
        Some(&["rolegate.dev/revoke".to_owned()][..])
    );
    api.delete("m", &DeleteParams::default()).await.unwrap();
    assert!(
        api.get("m")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    step(api.clone()).await.unwrap();
    assert_eq!(api_error(api.get("m").await).code, 404);
}

/// kube's discovery reads the resource lists: scope, verbs, short names, subresources.
#[tokio::test]
async fn kube_discovery_sees_the_resources() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    let discovery = kube::discovery::Discovery::new(client).run().await.unwrap();
    let (apps, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "rolegate.dev",
            "v1alpha1",
            "SAMLApp",
        ))
        .unwrap();
    assert_eq!(apps.plural, "samlapps");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "samlapps/status" || r.plural == "status"),
        "{:?}",
        caps.subresources
    );
    let (_, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ServiceAccount"))
        .unwrap();
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural.ends_with("token")),
        "{:?}",
        caps.subresources
    );
    assert!(discovery.has_group("coordination.k8s.io") && discovery.has_group("events.k8s.io"));
}

/// Foreground deletion: the owner stays (with `foregroundDeletion`) until its dependents are
/// gone, here a dependent held by its own finalizer.
#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    use k8s_openapi::api::core::v1::Secret;
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let apps = samlapps(&client);
    let app = apps
        .create(&PostParams::default(), &object(json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "metadata": {"name": "aws"}, "spec": {}})))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "key", "finalizers": ["hold"],
            "ownerReferences": [{"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "name": "aws",
                                 "uid": app.metadata.uid.clone().unwrap(), "blockOwnerDeletion": true}]}})).unwrap())
        .await
        .unwrap();
    apps.delete("aws", &DeleteParams::foreground())
        .await
        .unwrap();
    let owner = apps.get("aws").await.unwrap();
    assert!(owner.metadata.deletion_timestamp.is_some());
    assert_eq!(
        owner.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_owned()][..])
    );
    assert!(
        secrets
            .get("key")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    secrets
        .patch(
            "key",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(api_error(secrets.get("key").await).code, 404);
    assert_eq!(api_error(apps.get("aws").await).code, 404);
}

/// `kubectl auth whoami` and `kubectl auth can-i` ask the server (SelfSubjectReview,
/// SelfSubjectAccessReview), answered by the same authorizer as every request.
#[tokio::test]
async fn kubectl_auth_whoami_and_can_i() {
    let server = TestApiServer::start(options()).await;
    let client = admin(&server).await;
    namespace(&client, "team").await;
    let dir = tempfile::tempdir().unwrap();
    let sa = server.kubeconfig(
        dir.path(),
        &Identity::ServiceAccount {
            namespace: "team".into(),
            name: "default".into(),
        },
    );
    let (ok, out, err) = kubectl(&sa, &["auth", "whoami"], None).await;
    assert!(
        ok && out.contains("system:serviceaccount:team:default"),
        "{out}{err}"
    );
    let (ok, out, _) = kubectl(
        &sa,
        &["auth", "can-i", "list", "secrets", "-n", "team"],
        None,
    )
    .await;
    assert!(!ok && out.trim() == "no", "{out}");
    let admin_kc = server.kubeconfig(dir.path(), &Identity::Admin);
    let (ok, out, err) = kubectl(
        &admin_kc,
        &["auth", "can-i", "list", "secrets", "-n", "team"],
        None,
    )
    .await;
    assert!(ok && out.trim() == "yes", "{out}{err}");
    // Impersonation (--as): the admin may; the request then runs as the ServiceAccount.
    let (ok, out, _) = kubectl(
        &admin_kc,
        &[
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            "team",
            "--as=system:serviceaccount:team:default",
        ],
        None,
    )
    .await;
    assert!(!ok && out.trim() == "no", "{out}");
    let (ok, out, err) = kubectl(
        &admin_kc,
        &["auth", "whoami", "--as=system:serviceaccount:team:default"],
        None,
    )
    .await;
    assert!(
        ok && out.contains("system:serviceaccounts:team"),
        "{out}{err}"
    );
    // A ServiceAccount may not impersonate: 403 naming the impersonate verb.
    let (ok, _, err) = kubectl(&sa, &["get", "secrets", "-n", "team", "--as=admin"], None).await;
    assert!(
        !ok && err.contains(r#"cannot impersonate resource "users" in API group """#),
        "{err}"
    );
}

/// kubectl asks for aggregated discovery first: `/api` and `/apis` answer it whole, so no group
/// version's resource list is fetched; kube's client (unaggregated) reads the same resources.
#[tokio::test]
async fn kubectl_uses_aggregated_discovery() {
    let server = TestApiServer::start(options()).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path(), &Identity::Admin);
    let (ok, out, err) = kubectl(&kc, &["api-resources", "--no-headers"], None).await;
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter().any(|r| r[..]
            == [
                "samlapps",
                "sapp",
                "rolegate.dev/v1alpha1",
                "false",
                "SAMLApp"
            ]),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r[..] == ["leases", "coordination.k8s.io/v1", "true", "Lease"]),
        "{out}"
    );
    let paths: Vec<String> = server.audit().into_iter().map(|e| e.attrs.name).collect();
    assert_eq!(
        paths,
        ["/api", "/apis"],
        "only the aggregated documents were read"
    );
}
