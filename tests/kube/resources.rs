//! The resource registry: which kinds this server serves, under which group, version and plural,
//! with which verbs, scope, short names and subresources.
//!
//! Built-in kinds are a fixed table, read off the discovery documents of a Kubernetes 1.35 API
//! server (`kubectl api-resources -o wide`). Custom resources come from the stored
//! CustomResourceDefinitions, exactly as the apiextensions-apiserver serves them: one entry per
//! served version, scope and names from `spec`, `status` subresource when `spec.versions[].
//! subresources.status` is set, the schema from `spec.versions[].schema.openAPIV3Schema` and the
//! printer columns from `spec.versions[].additionalPrinterColumns`
//! (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/>).

use std::sync::Arc;

use serde_json::Value;

use super::schema::Schema;

/// The verbs of an ordinary read-write resource, as discovery lists them.
pub const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One printer column of a CRD version (`additionalPrinterColumns`).
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// One served resource (one group/version/plural).
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub kind: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    /// Has a `status` subresource: writes to the object keep the stored status, writes to
    /// `/status` keep everything but status.
    pub status: bool,
    /// Maintains `metadata.generation` (bumped on changes outside metadata and status).
    pub generation: bool,
    /// PUT of an absent object creates it (`AllowCreateOnUpdate` of the type's strategy).
    pub create_on_update: bool,
    /// For custom resources: the structural schema and printer columns.
    pub custom: Option<Arc<Custom>>,
    /// Another resource whose objects this one shows in its own form: core/v1 Events are
    /// events.k8s.io/v1 Events (one storage, two versions of the type, as in kube-apiserver).
    pub view_of: Option<(String, String)>,
}

/// What a CRD version adds to its resource.
#[derive(Debug)]
pub struct Custom {
    pub schema: Option<Schema>,
    pub columns: Vec<Column>,
}

impl ResourceInfo {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `resource.group` (`secrets`, `leases.coordination.k8s.io`), as Status messages name it.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `Kind.group` (`SAMLApp.rolegate.dev`, `Secret`), as Invalid messages name it.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether objects of this kind carry `apiVersion`/`kind` inside a list. The real server's
    /// typed (built-in) lists leave them out; unstructured (custom resource) lists keep them.
    pub fn items_carry_type(&self) -> bool {
        self.custom.is_some()
    }

    /// The field selectors this kind supports beyond `metadata.name` and `metadata.namespace`
    /// (each type's `GetAttrs`/field label conversion in the real server).
    pub fn extra_field_labels(&self) -> &'static [&'static str] {
        match (self.group.as_str(), self.resource.as_str()) {
            ("", "secrets") => &["type"],
            ("", "pods") => &["spec.nodeName", "spec.serviceAccountName", "status.phase"],
            ("", "namespaces") => &["status.phase"],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "reason",
                "type",
            ],
            ("events.k8s.io", "events") => &["regarding.kind", "regarding.name", "reason", "type"],
            ("", "nodes") => &["spec.unschedulable"],
            _ => &[],
        }
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    generation: bool,
    verbs: &'static [&'static str],
}

const fn b(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        resource,
        kind,
        namespaced,
        short,
        status,
        generation: false,
        verbs: CRUD,
    }
}

/// The built-in kinds this server serves. Kinds rolegate or its chart uses; the rest of a real
/// server's kinds answer 404 like a resource an aggregated API server is missing.
fn builtins() -> Vec<Builtin> {
    let mut list = vec![
        b("", "v1", "namespaces", "Namespace", false, &["ns"], true),
        b("", "v1", "secrets", "Secret", true, &[], false),
        b("", "v1", "configmaps", "ConfigMap", true, &["cm"], false),
        b(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
        ),
        b("", "v1", "pods", "Pod", true, &["po"], true),
        b("", "v1", "nodes", "Node", false, &["no"], true),
        b("", "v1", "services", "Service", true, &["svc"], true),
        b("", "v1", "events", "Event", true, &["ev"], false),
        b(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
        ),
        b("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"], true),
        b(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
        ),
        b(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
        ),
        b("batch", "v1", "jobs", "Job", true, &[], true),
        b(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
        ),
        b(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
        ),
        b(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
        ),
        b(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            false,
        ),
        b(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "Ingress",
            true,
            &["ing"],
            true,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
        ),
        b(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            &[],
            false,
        ),
        b(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            false,
        ),
        b(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
        ),
    ];
    for entry in &mut list {
        // Generation is kept by the kinds whose strategy sets it (workloads, Pods, webhook
        // configurations, CRDs); Secrets, ConfigMaps, Leases and the like have none.
        entry.generation = matches!(
            entry.resource,
            "deployments"
                | "daemonsets"
                | "statefulsets"
                | "replicasets"
                | "jobs"
                | "poddisruptionbudgets"
                | "mutatingwebhookconfigurations"
                | "validatingwebhookconfigurations"
                | "customresourcedefinitions"
                | "networkpolicies"
                | "ingresses"
                // Pods since Kubernetes 1.33 (KEP-5067, pod generation).
                | "pods"
        );
    }
    list.push(Builtin {
        verbs: &["create"],
        ..b(
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "TokenReview",
            false,
            &[],
            false,
        )
    });
    // The virtual review kinds of `kubectl auth whoami` and `kubectl auth can-i`.
    list.push(Builtin {
        verbs: &["create"],
        ..b(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
            &[],
            false,
        )
    });
    list.push(Builtin {
        verbs: &["create"],
        ..b(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            &[],
            false,
        )
    });
    list
}

/// Every built-in resource.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    builtins()
        .into_iter()
        .map(|b| ResourceInfo {
            group: b.group.into(),
            version: b.version.into(),
            resource: b.resource.into(),
            singular: b.kind.to_lowercase(),
            kind: b.kind.into(),
            namespaced: b.namespaced,
            short_names: b.short.iter().map(|s| (*s).to_owned()).collect(),
            categories: if matches!(
                b.resource,
                "pods" | "services" | "deployments" | "daemonsets"
            ) {
                vec!["all".into()]
            } else {
                Vec::new()
            },
            verbs: b.verbs.iter().map(|s| (*s).to_owned()).collect(),
            status: b.status,
            generation: b.generation,
            create_on_update: matches!(b.resource, "events"),
            custom: None,
            view_of: (b.group.is_empty() && b.resource == "events")
                .then(|| ("events.k8s.io".to_owned(), "events".to_owned())),
        })
        .collect()
}

/// The resources one stored CRD serves (one per served version), or an error message naming
/// what is wrong with the CRD.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceInfo>, String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind: Required value")?;
    let singular = names["singular"]
        .as_str()
        .map_or_else(|| kind.to_lowercase(), str::to_owned);
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            return Err(
                "spec.scope: Unsupported value: supported values: \"Cluster\", \"Namespaced\""
                    .into(),
            );
        }
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec["versions"]
        .as_array()
        .ok_or("spec.versions: Required value")?;
    let mut out = Vec::new();
    for version in versions {
        if version["served"].as_bool() != Some(true) {
            continue;
        }
        let name = version["name"]
            .as_str()
            .ok_or("spec.versions[].name: Required value")?;
        let schema = match version["schema"].get("openAPIV3Schema") {
            Some(s) => Some(Schema::new(s).map_err(|e| {
                format!("spec.versions[{name}].schema.openAPIV3Schema: Invalid value: {e}")
            })?),
            None => None,
        };
        let columns = version["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| Column {
                        name: c["name"].as_str().unwrap_or_default().to_owned(),
                        type_: c["type"].as_str().unwrap_or("string").to_owned(),
                        format: c["format"].as_str().unwrap_or_default().to_owned(),
                        description: c["description"].as_str().unwrap_or_default().to_owned(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        json_path: c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut categories = strings(&names["categories"]);
        categories.sort();
        out.push(ResourceInfo {
            group: group.into(),
            version: name.into(),
            resource: plural.into(),
            kind: kind.into(),
            singular: singular.clone(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories,
            verbs: CRUD.iter().map(|s| (*s).to_owned()).collect(),
            status: version["subresources"].get("status").is_some(),
            // Custom resources always keep metadata.generation.
            generation: true,
            create_on_update: false,
            custom: Some(Arc::new(Custom { schema, columns })),
            view_of: None,
        });
    }
    Ok(out)
}
