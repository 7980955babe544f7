//! The AWS traits implemented with aws-sdk-rust (and `AssumeRoleWithSAML` as one form POST,
//! [`super::query`]). `AWS_ENDPOINT_URL` is honoured through
//! aws-config; an IAMProvider's `endpointURL` overrides it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use jiff::Timestamp;

use super::{
    AssumeRequest, AwsError, ChainRequest, RegisteredProvider, RolePolicies, SamlProviders, Sts,
    StsCredentials,
};

fn to_aws_error<E, R>(err: &SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            super::query::service_error(
                e.code().unwrap_or("Unknown"),
                e.message().unwrap_or_default(),
            )
        }
        other => AwsError::Transport(DisplayErrorContext(other).to_string()),
    }
}

fn timestamp(t: &aws_sdk_sts::primitives::DateTime) -> Timestamp {
    Timestamp::from_second(t.secs()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The region from the environment, or `us-east-1`.
async fn region() -> aws_config::Region {
    RegionProviderChain::default_provider()
        .or_else("us-east-1")
        .region()
        .await
        .unwrap_or_else(|| aws_config::Region::new("us-east-1"))
}

/// STS through aws-sdk-sts, with no credentials, at the regional endpoint of the chosen
/// region (never the global one), unless an endpoint is set (`AWS_ENDPOINT_URL`, tests).
/// `AssumeRoleWithSAML`, unsigned and on every first request, is one form POST
/// ([`super::query`]) to the same endpoint, without the SDK's orchestrator.
#[derive(Debug, Clone)]
pub struct SdkSts {
    config: aws_config::SdkConfig,
    /// The HTTP client for `AssumeRoleWithSAML`.
    http: reqwest::Client,
}

/// How long connecting to STS may take, the SDK's default connect timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(3100);

impl SdkSts {
    /// A client configured from the environment (`AWS_REGION`, `AWS_ENDPOINT_URL`), without
    /// credentials: `AssumeRoleWithSAML` is unsigned. `endpoint_url` overrides the endpoint.
    pub async fn new(endpoint_url: Option<&str>) -> Self {
        Self::in_region(endpoint_url, None).await
    }

    /// As [`Self::new`], in `region` (`--sts-region`) rather than the environment's.
    pub async fn in_region(endpoint_url: Option<&str>, region: Option<&str>) -> Self {
        let region = match region {
            Some(r) => aws_config::Region::new(r.to_owned()),
            None => self::region().await,
        };
        // One attempt per call: the server's pacer (`server::pacing`) retries throttled and
        // unreachable calls itself, so that every attempt STS sees is paced.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .no_credentials()
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .region(region.clone());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { config, http }
    }

    /// The endpoint for an IAMProvider's `region` (`None`: the server's), as the SDK's
    /// clients set it: the configured one, else the region's.
    fn endpoint(&self, region: Option<&str>) -> String {
        if let Some(url) = self.config.endpoint_url() {
            return url.to_owned();
        }
        let server = self.config.region().map(aws_config::Region::as_ref);
        super::sts_endpoint(super::sts_region(region, server))
    }
}

#[async_trait]
impl Sts for SdkSts {
    async fn assume_role(
        &self,
        source: &StsCredentials,
        request: ChainRequest,
    ) -> Result<StsCredentials, AwsError> {
        let signing = aws_sdk_sts::config::Credentials::new(
            source.access_key_id.clone(),
            source.secret_access_key.clone(),
            Some(source.session_token.clone()),
            None,
            "rolegate-saml-session",
        );
        let region = request
            .region
            .clone()
            .or_else(|| self.config.region().map(ToString::to_string))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let mut builder = aws_sdk_sts::config::Builder::from(&self.config)
            .region(aws_config::Region::new(region.clone()))
            .credentials_provider(signing);
        if self.config.endpoint_url().is_none() {
            builder = builder.endpoint_url(super::sts_endpoint(&region));
        }
        let config = builder.build();
        let client = aws_sdk_sts::Client::from_conf(config);
        let out = client
            .assume_role()
            .role_arn(&request.role_arn)
            .role_session_name(&request.session_name)
            .set_external_id(request.external_id.clone())
            .duration_seconds(i32::try_from(request.duration_seconds).unwrap_or(3600))
            .send()
            .await
            .map_err(|e| to_aws_error(&e))?;
        let creds = out
            .credentials()
            .ok_or_else(|| AwsError::Transport("STS answered without credentials".into()))?;
        let user = out.assumed_role_user();
        Ok(StsCredentials {
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: creds.secret_access_key().to_owned(),
            session_token: creds.session_token().to_owned(),
            expiration: timestamp(creds.expiration()),
            assumed_role_arn: user.map(|u| u.arn().to_owned()).unwrap_or_default(),
            assumed_role_id: user
                .map(|u| u.assumed_role_id().to_owned())
                .unwrap_or_default(),
            ..source.clone()
        })
    }

    async fn assume_role_with_saml(
        &self,
        request: AssumeRequest,
    ) -> Result<StsCredentials, AwsError> {
        let url = super::query::request_url(&self.endpoint(request.region.as_deref()));
        let unreachable = |e: reqwest::Error| {
            AwsError::Transport(format!(
                "STS at {url} could not be reached (AssumeRoleWithSAML): {}",
                e.without_url()
            ))
        };
        let answer = self
            .http
            .post(&url)
            .form(&super::query::assume_role_with_saml_form(&request))
            .send()
            .await
            .map_err(unreachable)?;
        let status = answer.status().as_u16();
        let body = answer.text().await.map_err(unreachable)?;
        super::query::parse_assume_role_with_saml(status, &body)
    }
}

/// Static access keys for IAM, from a Secret.
#[derive(Clone)]
pub struct AccessKeys {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AccessKeys {
    /// The keys in a Secret: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`. `name` only labels the message, which never carries a value.
    ///
    /// # Errors
    /// A missing key.
    pub fn from_secret(
        secret: &k8s_openapi::api::core::v1::Secret,
        name: &str,
    ) -> Result<Self, String> {
        let value = |k: &str| {
            crate::store::secret_value(secret, k).and_then(|v| String::from_utf8(v.to_vec()).ok())
        };
        let required =
            |k: &str| value(k).ok_or_else(|| format!("credentials Secret {name:?} has no {k}"));
        Ok(Self {
            access_key_id: required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
            session_token: value("AWS_SESSION_TOKEN"),
        })
    }
}

/// How to reach IAM for one IAMProvider.
#[derive(Debug, Clone, Default)]
pub struct IamAccess {
    /// Endpoint override (`endpointURL`).
    pub endpoint_url: Option<String>,
    /// Keys from a Secret; `None` uses the default chain.
    pub keys: Option<AccessKeys>,
    /// A role to assume first.
    pub assume_role_arn: Option<String>,
}

impl IamAccess {
    /// How to reach IAM for `provider`, with `keys` read from its credentials Secret (if any).
    pub fn for_provider(provider: &crate::crd::IAMProvider, keys: Option<AccessKeys>) -> Self {
        Self {
            endpoint_url: provider.spec.endpoint_url.clone(),
            keys,
            assume_role_arn: provider
                .spec
                .credentials
                .as_ref()
                .and_then(|c| c.assume_role_arn.clone()),
        }
    }
}

fn iam_tags(tags: &BTreeMap<String, String>) -> Result<Vec<aws_sdk_iam::types::Tag>, AwsError> {
    tags.iter()
        .map(|(key, value)| {
            aws_sdk_iam::types::Tag::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|e| AwsError::Transport(e.to_string()))
        })
        .collect()
}

/// IAM SAML providers through aws-sdk-iam.
#[derive(Debug, Clone)]
pub struct SdkSamlProviders {
    client: aws_sdk_iam::Client,
}

impl SdkSamlProviders {
    /// A client for `access`.
    pub async fn new(access: &IamAccess) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region().await);
        if let Some(url) = &access.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(keys) = &access.keys {
            loader = loader.credentials_provider(aws_sdk_iam::config::Credentials::new(
                keys.access_key_id.clone(),
                keys.secret_access_key.clone(),
                keys.session_token.clone(),
                None,
                "rolegate-secret",
            ));
        }
        let mut config = loader.load().await;
        if let Some(role) = &access.assume_role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("rolegate-controller")
                .configure(&config)
                .build()
                .await;
            config = config
                .into_builder()
                .credentials_provider(aws_sdk_iam::config::SharedCredentialsProvider::new(
                    provider,
                ))
                .build();
        }
        Self {
            client: aws_sdk_iam::Client::new(&config),
        }
    }
}

impl SdkSamlProviders {
    /// Inline role policies through the same client (and credentials).
    pub fn role_policies(&self) -> SdkRolePolicies {
        SdkRolePolicies {
            client: self.client.clone(),
        }
    }
}

/// Inline role policies through aws-sdk-iam.
#[derive(Debug, Clone)]
pub struct SdkRolePolicies {
    client: aws_sdk_iam::Client,
}

#[async_trait]
impl RolePolicies for SdkRolePolicies {
    async fn put(&self, role: &str, name: &str, document: &str) -> Result<(), AwsError> {
        self.client
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(document)
            .send()
            .await
            .map_err(|e| to_aws_error(&e))?;
        Ok(())
    }

    async fn list(&self, role: &str) -> Result<Vec<String>, AwsError> {
        let mut names = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .client
                .list_role_policies()
                .role_name(role)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| to_aws_error(&e))?;
            names.extend(out.policy_names().iter().cloned());
            match out.marker() {
                Some(m) if out.is_truncated() => marker = Some(m.to_owned()),
                _ => return Ok(names),
            }
        }
    }

    async fn get(&self, role: &str, name: &str) -> Result<Option<String>, AwsError> {
        match self
            .client
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
        {
            // IAM returns the document URL-encoded (RFC 3986).
            Ok(out) => Ok(Some(
                percent_decode(out.policy_document())
                    .unwrap_or_else(|| out.policy_document().to_owned()),
            )),
            Err(e) => {
                let err = to_aws_error(&e);
                if err.code() == "NoSuchEntity" {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn delete(&self, role: &str, name: &str) -> Result<(), AwsError> {
        match self
            .client
            .delete_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = to_aws_error(&e);
                if err.code() == "NoSuchEntity" {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// Decodes `%XX` escapes; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[async_trait]
impl SamlProviders for SdkSamlProviders {
    async fn create(
        &self,
        name: &str,
        metadata: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, AwsError> {
        let mut request = self
            .client
            .create_saml_provider()
            .name(name)
            .saml_metadata_document(metadata);
        for tag in iam_tags(tags)? {
            request = request.tags(tag);
        }
        let out = request.send().await.map_err(|e| to_aws_error(&e))?;
        out.saml_provider_arn()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::Transport("IAM answered without a provider ARN".into()))
    }

    async fn tag(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        let mut request = self.client.tag_saml_provider().saml_provider_arn(arn);
        for tag in iam_tags(tags)? {
            request = request.tags(tag);
        }
        request.send().await.map_err(|e| to_aws_error(&e))?;
        Ok(())
    }

    async fn update(&self, arn: &str, metadata: &str) -> Result<(), AwsError> {
        self.client
            .update_saml_provider()
            .saml_provider_arn(arn)
            .saml_metadata_document(metadata)
            .send()
            .await
            .map_err(|e| to_aws_error(&e))?;
        Ok(())
    }

    async fn get(&self, arn: &str) -> Result<Option<RegisteredProvider>, AwsError> {
        match self
            .client
            .get_saml_provider()
            .saml_provider_arn(arn)
            .send()
            .await
        {
            Ok(out) => Ok(Some(RegisteredProvider {
                metadata: out.saml_metadata_document().unwrap_or_default().to_owned(),
                valid_until: out
                    .valid_until()
                    .map(|t| Timestamp::from_second(t.secs()).unwrap_or(Timestamp::UNIX_EPOCH)),
                tags: out
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect(),
            })),
            Err(e) => {
                let err = to_aws_error(&e);
                if err.code() == "NoSuchEntity" {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn delete(&self, arn: &str) -> Result<(), AwsError> {
        match self
            .client
            .delete_saml_provider()
            .saml_provider_arn(arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = to_aws_error(&e);
                if err.code() == "NoSuchEntity" {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }
}
