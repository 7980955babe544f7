//! rolegate: a Kubernetes operator with an in-cluster SAML 2.0 identity provider that turns
//! service-account tokens and people's sign-ins into AWS credentials through
//! `sts:AssumeRoleWithSAML`.

pub mod agent;
pub mod auth0;
pub mod aws;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod dev;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod idp;
pub mod keys;
pub mod laptop;
pub mod login;
pub mod metrics;
pub mod pacing;
pub mod pki;
pub mod pod_audit;
pub mod policy;
pub mod registration;
pub mod revocation;
pub mod rotation;
pub mod saml;
pub mod server;
pub mod standalone;
pub mod store;
pub mod tokenreview;
pub mod tokens;
pub mod webhook;
