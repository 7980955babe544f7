//! Discovery and OpenAPI, as <https://kubernetes.io/docs/concepts/overview/kubernetes-api/>
//! (sections "Discovery API" and "OpenAPI interface definition") describes them:
//!
//! - `/api` (APIVersions), `/apis` (APIGroupList), `/api/v1` and `/apis/GROUP/VERSION`
//!   (APIResourceList: name, singularName, namespaced, kind, verbs, shortNames, categories, and
//!   one entry per subresource such as `samlapps/status` or `serviceaccounts/token`). Only the
//!   `/api` and `/apis` also in the aggregated form (`apidiscovery.k8s.io/v2`
//!   APIGroupDiscoveryList, "Aggregated discovery"), when the client's Accept asks for it first,
//!   as kubectl does; otherwise the unaggregated form.
//! - `/openapi/v3` (the index of group versions) and `/openapi/v3/apis/GROUP/VERSION`: a path per
//!   resource whose PATCH operation carries `x-kubernetes-group-version-kind` and the
//!   `fieldValidation` query parameter, which is how kubectl decides to leave validation to the
//!   server (`--validate=strict`, its default, then sends `fieldValidation=Strict`); and, for
//!   custom resources, the CRD's schema under `components.schemas`. `/openapi/v2` is 404, as on a
//!   server with it turned off; kubectl needs it only when v3 is missing.
//! - `/version`.

use serde_json::{Value, json};

use super::resources::ResourceInfo;

/// The version this server claims (the kubectl it is tested with is 1.35).
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "35", "gitVersion": "v1.35.0", "gitCommit": "test-apiserver",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

pub fn api_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
    })
}

/// The group versions, in first-seen order.
fn group_versions(resources: &[ResourceInfo]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version.clone());
                }
            }
            None => groups.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    groups
}

pub fn api_group_list(resources: &[ResourceInfo]) -> Value {
    let groups: Vec<Value> = group_versions(resources)
        .into_iter()
        .map(|(group, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP` (APIGroup), or None when the group is not served.
pub fn api_group(resources: &[ResourceInfo], group: &str) -> Option<Value> {
    let (name, versions) = group_versions(resources)
        .into_iter()
        .find(|(g, _)| g == group)?;
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs, "preferredVersion": vs[0]}),
    )
}

/// `/api/v1` or `/apis/GROUP/VERSION`, or None when not served.
pub fn api_resource_list(resources: &[ResourceInfo], group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.resource, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        if r.status {
            list.push(
                json!({"name": format!("{}/status", r.resource), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if r.group.is_empty() && r.resource == "serviceaccounts" {
            list.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
    }
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// `/openapi/v3`: the index.
pub fn openapi_index(resources: &[ResourceInfo], rv: u64) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<String> = Vec::new();
    for r in resources {
        let gv = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    for gv in gvs {
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={rv:016X}")}),
        );
    }
    json!({"paths": paths})
}

fn schema_name(r: &ResourceInfo) -> String {
    let group: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), r.version, r.kind)
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/VERSION`.
pub fn openapi_group_version(
    resources: &[ResourceInfo],
    group: &str,
    version: &str,
) -> Option<Value> {
    let served: Vec<&ResourceInfo> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for r in served {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let prefix = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let base = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.resource)
        } else {
            format!("{prefix}/{}", r.resource)
        };
        let op = |action: &str| {
            json!({"operationId": format!("{action}{}", r.kind), "x-kubernetes-action": action,
                   "x-kubernetes-group-version-kind": gvk,
                   "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation")],
                   "responses": {"200": {"description": "OK"}}})
        };
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete"),
            }),
        );
        paths.insert(base, json!({"get": op("list"), "post": op("post")}));
        if let Some(schema) = r.custom.as_ref().and_then(|c| c.schema.as_ref()) {
            let mut s = schema.structural().clone();
            s["x-kubernetes-group-version-kind"] = json!([gvk]);
            schemas.insert(schema_name(r), s);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The Content-Type of an aggregated discovery document.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `/api` (`core`) or `/apis` as an APIGroupDiscoveryList.
pub fn aggregated(resources: &[ResourceInfo], core: bool) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in resources.iter().filter(|r| r.group.is_empty() == core) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => {
                versions.push(r.version.clone())
            }
            Some(_) => {}
            None => groups.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    let list: Vec<Value> = resources
                        .iter()
                        .filter(|r| r.group == group && &r.version == version)
                        .map(|r| {
                            let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
                            let mut subresources = Vec::new();
                            if r.status {
                                subresources.push(json!({"subresource": "status", "responseKind": kind,
                                    "verbs": ["get", "patch", "update"]}));
                            }
                            if r.group.is_empty() && r.resource == "serviceaccounts" {
                                subresources.push(json!({"subresource": "token",
                                    "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"},
                                    "verbs": ["create"]}));
                            }
                            let mut entry = json!({
                                "resource": r.resource, "responseKind": kind,
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular, "verbs": r.verbs,
                            });
                            if !r.short_names.is_empty() {
                                entry["shortNames"] = json!(r.short_names);
                            }
                            if !r.categories.is_empty() {
                                entry["categories"] = json!(r.categories);
                            }
                            if !subresources.is_empty() {
                                entry["subresources"] = json!(subresources);
                            }
                            entry
                        })
                        .collect();
                    json!({"version": version, "resources": list, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
