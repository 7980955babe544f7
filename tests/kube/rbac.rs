//! RBAC for the test API server: every request is authorised against the Roles, ClusterRoles
//! and bindings in the store, as kube-apiserver's RBAC authorizer does, and a denial carries the
//! real 403 message.
//!
//! Grounded in "Using RBAC Authorization" (kubernetes.io/docs/reference/access-authn-authz/rbac/):
//! - permissions are purely additive; a RoleBinding grants a Role's (or a ClusterRole's) rules
//!   in its own namespace only; a ClusterRoleBinding grants cluster-wide;
//! - rules match on verbs, apiGroups, resources (`pods/log` names a subresource, `*` all
//!   resources, `*/scale` a subresource of any), resourceNames, and nonResourceURLs (ClusterRoles
//!   only, `*` as a final suffix);
//! - "You cannot restrict create or deletecollection requests by their resource name. For
//!   create, this limitation is because the name of the new object may not be known at
//!   authorization time" — and a list or watch names no object unless its fieldSelector is
//!   `metadata.name=` (the caller sets `Attributes::name` then);
//! - subjects: User, Group, ServiceAccount (namespace defaulting to the RoleBinding's);
//! - "Default roles and role bindings": system:discovery, system:basic-user and
//!   system:public-info-viewer bound to system:authenticated (and the public one to
//!   system:unauthenticated), which every cluster has without any chart granting them.
//!
//! `system:masters` is allowed everything before RBAC is asked, as kube-apiserver's
//! privileged-group authorizer does ("Authenticating": the admin group).
//!
//! The order of evaluation (ClusterRoleBindings, then RoleBindings of the request's namespace),
//! the matching helpers and the message come from plugin/pkg/auth/authorizer/rbac,
//! pkg/registry/rbac/validation/rule.go and apiserver's responsewriters.forbiddenMessage.
#![allow(dead_code)]

use serde_json::{Value, json};

use super::auth::{Lookup, Status, User, qualified};

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// What a request asks to do, as apiserver's `authorizer.Attributes`. A non-resource request
/// (e.g. `GET /version`) has an empty `resource` and the path in `name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    /// A request for an object or a collection.
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A request for a path that is no resource (`/api`, `/version`, `/openapi/v3`).
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Attributes {
            verb: verb.into(),
            name: path.into(),
            ..Attributes::default()
        }
    }

    pub fn is_resource_request(&self) -> bool {
        !self.resource.is_empty()
    }
}

/// One PolicyRule, read from JSON.
#[derive(Debug, Clone, Default)]
struct Rule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    fn from_json(v: &Value) -> Self {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// RBAC's `RuleAllows`.
    fn allows(&self, a: &Attributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        if !verb {
            return false;
        }
        if a.is_resource_request() {
            let combined = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            self.api_groups
                .iter()
                .any(|g| g == "*" || *g == a.api_group)
                && self.resources.iter().any(|r| {
                    r == "*"
                        || *r == combined
                        || (!a.subresource.is_empty()
                            && r.len() == a.subresource.len() + 2
                            && r.starts_with("*/")
                            && r.ends_with(&a.subresource))
                })
                && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
        } else {
            self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.name
                    || (u.ends_with('*') && a.name.starts_with(u.trim_end_matches('*')))
            })
        }
    }
}

/// Whether a binding subject is `user` (rule.go's `appliesToUser`); `namespace` is the
/// RoleBinding's (empty for a ClusterRoleBinding).
fn applies_to(user: &User, subject: &Value, namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The default ClusterRoles and ClusterRoleBindings every cluster is bootstrapped with that an
/// ordinary client needs (bootstrappolicy's system:discovery, system:basic-user,
/// system:public-info-viewer). Core may store them so `kubectl get clusterroles` lists them.
pub fn bootstrap_policy() -> Vec<Value> {
    let annotations = json!({"rbac.authorization.kubernetes.io/autoupdate": "true"});
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "annotations": annotations, "labels": labels},
               "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "annotations": annotations, "labels": labels},
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
               "subjects": subjects})
    };
    vec![
        role(
            "system:discovery",
            json!([{"verbs": ["get"], "nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                "/readyz", "/version", "/version/"]}]),
        ),
        role(
            "system:basic-user",
            json!([
                {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
                {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                 "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
            ]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"verbs": ["get"], "nonResourceURLs": [
                "/healthz", "/livez", "/readyz", "/version", "/version/"]}]),
        ),
        binding("system:discovery", &["system:authenticated"]),
        binding("system:basic-user", &["system:authenticated"]),
        binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}

fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

/// The bootstrap policy, built once.
fn bootstrap() -> &'static [Value] {
    static POLICY: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    POLICY.get_or_init(bootstrap_policy)
}

/// The store's objects of a kind, with the bootstrap ones the store does not shadow, by name.
fn with_bootstrap(mut stored: Vec<Value>, kind: &str) -> Vec<Value> {
    let names: Vec<String> = stored.iter().map(|v| name_of(v).to_owned()).collect();
    stored.extend(
        bootstrap()
            .iter()
            .filter(|v| v["kind"] == kind && !names.iter().any(|n| n == name_of(v)))
            .cloned(),
    );
    // The real authorizer walks an informer cache in no defined order; by name is stable.
    stored.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    stored
}

/// The rules a roleRef names, or the error the real resolver reports.
fn role_rules(lookup: &dyn Lookup, role_ref: &Value, namespace: &str) -> Result<Vec<Rule>, String> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match role_ref["kind"].as_str().unwrap_or_default() {
        "Role" => lookup
            .get(GROUP, "roles", Some(namespace), name)
            .ok_or_else(|| format!("role.rbac.authorization.k8s.io {name:?} not found"))?,
        "ClusterRole" => lookup
            .get(GROUP, "clusterroles", None, name)
            .or_else(|| {
                bootstrap()
                    .iter()
                    .find(|v| v["kind"] == "ClusterRole" && name_of(v) == name)
                    .cloned()
            })
            .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io {name:?} not found"))?,
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    Ok(role["rules"]
        .as_array()
        .map(|rules| rules.iter().map(Rule::from_json).collect())
        .unwrap_or_default())
}

/// Authorises `attrs` for `user`. Ok names the rule that allowed it, e.g.
/// `ClusterRole/rolegate-controller rule 3 via ClusterRoleBinding/rolegate-controller` (the
/// 0-based index into the role's `rules`), `Role/ns/name rule 0 via RoleBinding/ns/name`, or
/// `group system:masters`. Err is the 403 message exactly as kube-apiserver words it.
pub fn authorize(lookup: &dyn Lookup, user: &User, attrs: &Attributes) -> Result<String, String> {
    decide(lookup, user, attrs).map_err(|errors| forbidden_message(user, attrs, &errors))
}

/// The authorizer's reason for a denial: empty, or `RBAC: <role resolution errors>` (the
/// errors aggregated as apimachinery prints them: one plainly, several in brackets, each once).
fn reason(errors: &[String]) -> String {
    let mut unique: Vec<&str> = Vec::new();
    for e in errors {
        if !unique.contains(&e.as_str()) {
            unique.push(e);
        }
    }
    match unique.as_slice() {
        [] => String::new(),
        [one] => format!("RBAC: {one}"),
        many => format!("RBAC: [{}]", many.join(", ")),
    }
}

/// Ok: the rule that allows `attrs`; Err: the role resolution errors met on the way.
fn decide(lookup: &dyn Lookup, user: &User, attrs: &Attributes) -> Result<String, Vec<String>> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok("group system:masters".into());
    }
    let mut errors: Vec<String> = Vec::new();
    let cluster_bindings = with_bootstrap(
        lookup.list(GROUP, "clusterrolebindings", None),
        "ClusterRoleBinding",
    );
    for binding in &cluster_bindings {
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        if !subjects.iter().any(|s| applies_to(user, s, "")) {
            continue;
        }
        match role_rules(lookup, &binding["roleRef"], "") {
            Ok(rules) => {
                if let Some(i) = rules.iter().position(|r| r.allows(attrs)) {
                    return Ok(format!(
                        "ClusterRole/{} rule {i} via ClusterRoleBinding/{}",
                        binding["roleRef"]["name"].as_str().unwrap_or_default(),
                        name_of(binding)
                    ));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if !attrs.namespace.is_empty() {
        let mut bindings = lookup.list(GROUP, "rolebindings", Some(&attrs.namespace));
        bindings.retain(|b| b["metadata"]["namespace"].as_str() == Some(attrs.namespace.as_str()));
        bindings.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        for binding in &bindings {
            let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
            if !subjects
                .iter()
                .any(|s| applies_to(user, s, &attrs.namespace))
            {
                continue;
            }
            let role_ref = &binding["roleRef"];
            match role_rules(lookup, role_ref, &attrs.namespace) {
                Ok(rules) => {
                    if let Some(i) = rules.iter().position(|r| r.allows(attrs)) {
                        let kind = role_ref["kind"].as_str().unwrap_or_default();
                        let role = role_ref["name"].as_str().unwrap_or_default();
                        let role = if kind == "Role" {
                            format!("Role/{}/{role}", attrs.namespace)
                        } else {
                            format!("ClusterRole/{role}")
                        };
                        return Ok(format!(
                            "{role} rule {i} via RoleBinding/{}/{}",
                            attrs.namespace,
                            name_of(binding)
                        ));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    Err(errors)
}

/// The 403 message: apimachinery's `NewForbidden` around apiserver's `forbiddenMessage`, with
/// the RBAC authorizer's reason (role resolution errors) appended.
fn forbidden_message(user: &User, a: &Attributes, errors: &[String]) -> String {
    let mut message = if a.is_resource_request() {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        let what = qualified(&a.api_group, &a.resource);
        let subject = if a.name.is_empty() {
            format!("{what} is forbidden")
        } else {
            format!("{what} {:?} is forbidden", a.name)
        };
        format!(
            "{subject}: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            user.name, a.verb, a.api_group
        )
    } else {
        format!(
            "forbidden: User {:?} cannot {} path {:?}",
            user.name, a.verb, a.name
        )
    };
    let reason = reason(errors);
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(&reason);
    }
    message
}

/// The 403 `Status` for a denial (`reason: Forbidden`, details naming the object).
pub fn forbidden(attrs: &Attributes, message: &str) -> Status {
    let details = if attrs.is_resource_request() {
        json!({"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource})
    } else {
        json!({})
    };
    Status::new(403, "Forbidden", message).with_details(details)
}

/// Maps an owner's (apiVersion, kind) to its (group, resource, namespaced), as a REST mapper.
pub type OwnerResolver<'a> = dyn Fn(&str, &str) -> Option<(String, String, bool)> + 'a;

/// The OwnerReferencesPermissionEnforcement admission plugin (off by default in kube-apiserver,
/// on in OpenShift; "Admission Controllers Reference"): a write that changes
/// `metadata.ownerReferences` needs `delete` on the object itself (except on create), and a
/// reference that newly sets `blockOwnerDeletion: true` needs `update` on the owner's
/// `finalizers` subresource. `resolve(apiVersion, kind)` maps an owner to (group, resource,
/// namespaced). Ok lists the rules that allowed each check (for the audit); Err is the 403 the
/// plugin answers (plugin/pkg/admission/gc).
pub fn owner_references_permission(
    lookup: &dyn Lookup,
    user: &User,
    write: &Attributes,
    old: Option<&Value>,
    new: &Value,
    resolve: &OwnerResolver<'_>,
) -> Result<Vec<String>, Status> {
    let refs = |o: Option<&Value>| -> Vec<Value> {
        o.and_then(|o| o["metadata"]["ownerReferences"].as_array().cloned())
            .unwrap_or_default()
    };
    let (before, after) = (refs(old), refs(Some(new)));
    let changing = match old {
        None => !after.is_empty(),
        Some(_) => before != after,
    };
    if !changing {
        return Ok(Vec::new());
    }
    let name = new["metadata"]["name"]
        .as_str()
        .unwrap_or(write.name.as_str());
    let forbid = |detail: String| {
        let what = qualified(&write.api_group, &write.resource);
        let message = if name.is_empty() {
            format!("{what} is forbidden: {detail}")
        } else {
            format!("{what} {name:?} is forbidden: {detail}")
        };
        Status::new(403, "Forbidden", &message)
            .with_details(json!({"name": name, "group": write.api_group, "kind": write.resource}))
    };
    let mut allowed_by = Vec::new();
    if write.verb != "create" {
        let delete = Attributes {
            verb: "delete".into(),
            ..write.clone()
        };
        match decide(lookup, user, &delete) {
            Ok(rule) => allowed_by.push(rule),
            Err(errors) => {
                return Err(forbid(format!(
                    "cannot set an ownerRef on a resource you can't delete: {}, <nil>",
                    reason(&errors)
                )));
            }
        }
    }
    let blocking = |r: &Value| r["blockOwnerDeletion"] == json!(true);
    for owner in after.iter().filter(|r| blocking(r)) {
        let was_blocking = before
            .iter()
            .any(|b| b["uid"] == owner["uid"] && blocking(b));
        if was_blocking {
            continue;
        }
        let api_version = owner["apiVersion"].as_str().unwrap_or_default();
        let kind = owner["kind"].as_str().unwrap_or_default();
        let Some((group, resource, namespaced)) = resolve(api_version, kind) else {
            return Err(forbid(format!(
                "cannot set blockOwnerDeletion in this case because cannot find RESTMapping for APIVersion {api_version} Kind {kind}: no matches for kind {kind:?} in version {api_version:?}"
            )));
        };
        let finalizers = Attributes {
            verb: "update".into(),
            api_group: group,
            resource,
            subresource: "finalizers".into(),
            namespace: if namespaced {
                write.namespace.clone()
            } else {
                String::new()
            },
            name: owner["name"].as_str().unwrap_or_default().to_owned(),
        };
        match decide(lookup, user, &finalizers) {
            Ok(rule) => allowed_by.push(rule),
            Err(errors) => {
                return Err(forbid(format!(
                    "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on: {}, <nil>",
                    reason(&errors)
                )));
            }
        }
    }
    Ok(allowed_by)
}
