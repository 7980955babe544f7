//! The `rolegate.dev/v1alpha1` custom resources, generated into `crds/` by `rolegate crds`.

mod connection;
mod iamprovider;
mod rolemapping;
mod samlapp;

pub use connection::{
    ClaimNames, Connection, ConnectionKind, ConnectionSpec, ConnectionStatus, KubernetesConnection,
    OidcConnection, StaticConnection,
};
pub use iamprovider::{
    AwsCredentials, DeletionPolicy, IAMProvider, IAMProviderSpec, IAMProviderStatus,
    SessionTagBounds,
};
pub use rolemapping::{RoleMapping, RoleMappingSpec, RoleMappingStatus, SubjectKind, SubjectRef};
pub use samlapp::{
    CertificateState, CertificateStatus, DigestAlgorithm, LogoutSpec, SAMLApp, SAMLAppSpec,
    SAMLAppStatus, SignatureAlgorithm, SigningSpec,
};

use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The default NameID format, SAML 2.0 persistent.
pub fn samlapp_persistent() -> String {
    samlapp::PERSISTENT.to_owned()
}

/// The API group of every rolegate resource.
pub const GROUP: &str = "rolegate.dev";
/// The version of the resources in this module.
pub const VERSION: &str = "v1alpha1";
/// The `apiVersion` string of the resources in this module.
pub const API_VERSION: &str = "rolegate.dev/v1alpha1";

/// A reference to a Secret, optionally to one key in it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret. Defaults to the operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Every CRD of the project, in a stable order.
pub fn all()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        SAMLApp::crd(),
        IAMProvider::crd(),
        RoleMapping::crd(),
        Connection::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, exactly as committed under `crds/`.
///
/// # Errors
/// Fails only if a CRD cannot be serialised, which would be a bug in the types.
pub fn render_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

/// The file name under `crds/` of each CRD, paired with its YAML.
///
/// # Errors
/// Fails only if a CRD cannot be serialised.
pub fn render_files() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    all()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            serde_saphyr::to_string(&crd).map(|yaml| (file, yaml))
        })
        .collect()
}
