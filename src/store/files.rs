//! Standalone mode: resources read from the CR YAML files of one directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde::de::DeserializeOwned;

use super::Snapshot;
use crate::crd::{API_VERSION, Connection, IAMProvider, RoleMapping, SAMLApp};

/// A config directory that cannot be loaded, with the file and document at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{path}: {reason}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// A document does not fit its kind.
    #[error("{path}, document {index}: {reason}")]
    Document {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Two objects share a kind, namespace and name.
    #[error("{path}: {kind} {name:?} is defined twice")]
    Duplicate {
        /// The later file.
        path: PathBuf,
        /// The kind.
        kind: String,
        /// The namespaced name.
        name: String,
    },
}

/// The YAML files of `dir`, sorted, so that loading is deterministic.
///
/// # Errors
/// When the directory cannot be listed.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read = |source| LoadError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every rolegate resource, `v1/Namespace`, `v1/Secret` and the `rolegate.dev/role`
/// annotation of `v1/ServiceAccount` in the YAML files of `dir`.
/// Other kinds are ignored, so a directory can also hold unrelated manifests.
///
/// # Errors
/// The first unreadable file or invalid document, naming it.
pub fn load_dir(dir: &Path) -> Result<Snapshot, LoadError> {
    let mut snapshot = Snapshot::default();
    for path in yaml_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        load_text(&mut snapshot, &path, &text)?;
    }
    Ok(snapshot)
}

/// Adds the documents of one YAML stream to `snapshot`.
///
/// # Errors
/// An invalid document, or an object defined twice.
pub fn load_text(snapshot: &mut Snapshot, path: &Path, text: &str) -> Result<(), LoadError> {
    // No source snippet in the message: the lines around a mistake may be a Secret's values,
    // and the message goes to the log. Line and column still say where.
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple_with_options(text, options)
        .map_err(|e| LoadError::Yaml {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let index = i + 1;
        let fail = |reason: String| LoadError::Document {
            path: path.to_path_buf(),
            index,
            reason,
        };
        let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
        let kind = doc
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let name = doc
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| fail(format!("{kind} has no metadata.name")))?
            .to_owned();
        let duplicate = |key: String| LoadError::Duplicate {
            path: path.to_path_buf(),
            kind: kind.clone(),
            name: key,
        };
        match (api_version, kind.as_str()) {
            (API_VERSION, "SAMLApp") => {
                let unknown = doc
                    .get("spec")
                    .map(crate::crd::SAMLAppSpec::unknown_fields)
                    .unwrap_or_default();
                if !unknown.is_empty() {
                    return Err(fail(format!(
                        "SAMLApp {name:?} has unknown field(s): {}",
                        unknown.join(", ")
                    )));
                }
                let app: SAMLApp = parse(doc, &fail)?;
                if snapshot.apps.insert(name.clone(), app).is_some() {
                    return Err(duplicate(name));
                }
            }
            (API_VERSION, "IAMProvider") => {
                let provider: IAMProvider = parse(doc, &fail)?;
                if snapshot.providers.insert(name.clone(), provider).is_some() {
                    return Err(duplicate(name));
                }
            }
            (API_VERSION, "Connection") => {
                let connection: Connection = parse(doc, &fail)?;
                connection
                    .spec
                    .kind()
                    .map_err(|e| fail(format!("Connection {name:?}: {e}")))?;
                if snapshot
                    .connections
                    .insert(name.clone(), connection)
                    .is_some()
                {
                    return Err(duplicate(name));
                }
            }
            (API_VERSION, "RoleMapping") => {
                let mut mapping: RoleMapping = parse(doc, &fail)?;
                let namespace = mapping
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".to_owned())
                    .clone();
                let taken = snapshot.mappings.iter().any(|m| {
                    m.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && m.metadata.name.as_deref() == Some(name.as_str())
                });
                if taken {
                    return Err(duplicate(format!("{namespace}/{name}")));
                }
                snapshot.mappings.push(mapping);
            }
            ("v1", "Namespace") => {
                let namespace: Namespace = parse(doc, &fail)?;
                let labels: BTreeMap<String, String> =
                    namespace.metadata.labels.unwrap_or_default();
                if snapshot.namespaces.insert(name.clone(), labels).is_some() {
                    return Err(duplicate(name));
                }
            }
            ("v1", "ServiceAccount") => {
                let namespace = doc
                    .pointer("/metadata/namespace")
                    .and_then(|v| v.as_str())
                    .unwrap_or("default")
                    .to_owned();
                let role = doc
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(crate::webhook::ROLE_ANNOTATION))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                if let Some(role) = role {
                    let key = (namespace.clone(), name.clone());
                    if snapshot.service_account_roles.insert(key, role).is_some() {
                        return Err(duplicate(format!("{namespace}/{name}")));
                    }
                }
            }
            ("v1", "Secret") => {
                let secret: Secret = parse(doc, &fail)?;
                let namespace = secret
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned());
                let key = (namespace.clone(), name.clone());
                if snapshot.secrets.insert(key, secret).is_some() {
                    return Err(duplicate(format!("{namespace}/{name}")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(
    doc: serde_json::Value,
    fail: &dyn Fn(String) -> LoadError,
) -> Result<T, LoadError> {
    serde_json::from_value(doc).map_err(|e| fail(e.to_string()))
}

/// A fingerprint of the YAML files of `dir` (names, sizes, modification times), to notice
/// changes cheaply between full reloads.
pub fn dir_fingerprint(dir: &Path) -> Option<Vec<(PathBuf, u64, std::time::SystemTime)>> {
    let files = yaml_files(dir).ok()?;
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((p, meta.len(), meta.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_samlapp_with_an_unknown_field_is_refused_naming_it() {
        let text = "apiVersion: rolegate.dev/v1alpha1\nkind: SAMLApp\nmetadata: {name: aws}\nspec:\n  createUPNClaim: false\n  logout: {callback: https://sp/slo, slo_enabled: false}\n  createUpnClaim: false\n";
        let err = load_text(&mut Snapshot::default(), Path::new("apps.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "SAMLApp \"aws\" has unknown field(s): spec.createUPNClaim, spec.logout.slo_enabled"
            ),
            "{err}"
        );
        let good = "apiVersion: rolegate.dev/v1alpha1\nkind: SAMLApp\nmetadata: {name: aws}\nspec:\n  createUpnClaim: false\n  logout: {callback: https://sp/slo, sloEnabled: false}\n  signing: {keySize: 2048}\n";
        let mut snapshot = Snapshot::default();
        load_text(&mut snapshot, Path::new("apps.yaml"), good).unwrap();
        assert!(!snapshot.apps["aws"].spec.create_upn_claim);
    }
}
