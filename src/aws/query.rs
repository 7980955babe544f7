//! PURE: STS's query protocol for `AssumeRoleWithSAML`, the one call on every first request. The
//! call is unsigned, so it is one form POST and one XML answer; [`super::sdk::SdkSts`] sends it
//! without the SDK's orchestrator. AWS documents the protocol in "Making Query requests" and the
//! answer in the `AssumeRoleWithSAML` API reference.

use jiff::Timestamp;

use super::{AssumeRequest, AwsError, StsCredentials};

/// The STS API version the query protocol names.
const VERSION: &str = "2011-06-15";

/// Error codes by which AWS asks the caller to slow down.
pub const THROTTLE_CODES: [&str; 4] = [
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// An AWS error code and message as rolegate keeps them: throttling apart from the rest.
pub fn service_error(code: &str, message: &str) -> AwsError {
    if THROTTLE_CODES.contains(&code) {
        AwsError::Throttled(message.to_owned())
    } else {
        AwsError::Service {
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// The form fields of an `AssumeRoleWithSAML` request.
pub fn assume_role_with_saml_form(request: &AssumeRequest) -> Vec<(&'static str, String)> {
    vec![
        ("Action", "AssumeRoleWithSAML".to_owned()),
        ("Version", VERSION.to_owned()),
        ("RoleArn", request.role_arn.clone()),
        ("PrincipalArn", request.principal_arn.clone()),
        ("SAMLAssertion", request.saml_assertion.clone()),
        ("DurationSeconds", request.duration_seconds.to_string()),
    ]
}

/// The URL to POST to: the endpoint with a `/` path when it has none.
pub fn request_url(endpoint: &str) -> String {
    let after_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    if after_scheme.contains('/') {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/")
    }
}

/// The first child element of `node` named `name` (in any namespace).
fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// Reads STS's answer to `AssumeRoleWithSAML`: the credentials on success, else the error
/// STS names (`ErrorResponse/Error/Code` and `Message`).
///
/// # Errors
/// The error STS answered, or `Transport` for an answer that is not STS's.
pub fn parse_assume_role_with_saml(status: u16, body: &str) -> Result<StsCredentials, AwsError> {
    let unreadable = |why: &str| {
        AwsError::Transport(format!(
            "STS answered HTTP {status} with {why} (AssumeRoleWithSAML)"
        ))
    };
    let document =
        roxmltree::Document::parse(body).map_err(|_| unreadable("a body that is not XML"))?;
    let root = document.root_element();
    let text = |node: Option<roxmltree::Node<'_, '_>>, name: &str| {
        node.and_then(|n| child(n, name))
            .and_then(|n| n.text())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    if root.tag_name().name() == "ErrorResponse" {
        let error = child(root, "Error");
        let code = text(error, "Code");
        if code.is_empty() {
            return Err(unreadable("an error without a code"));
        }
        return Err(service_error(&code, &text(error, "Message")));
    }
    if !(200..300).contains(&status) || root.tag_name().name() != "AssumeRoleWithSAMLResponse" {
        return Err(unreadable(
            "an answer that is neither credentials nor an error",
        ));
    }
    let result = child(root, "AssumeRoleWithSAMLResult");
    let credentials = result.and_then(|r| child(r, "Credentials"));
    if credentials.is_none() {
        return Err(AwsError::Transport(
            "STS answered without credentials".into(),
        ));
    }
    let expiration = text(credentials, "Expiration");
    let expiration = expiration
        .parse::<Timestamp>()
        .map_err(|_| unreadable("an Expiration that is not a timestamp"))?;
    let expiration = Timestamp::from_second(expiration.as_second()).unwrap_or(expiration);
    let user = result.and_then(|r| child(r, "AssumedRoleUser"));
    let access_key_id = text(credentials, "AccessKeyId");
    let secret_access_key = text(credentials, "SecretAccessKey");
    let session_token = text(credentials, "SessionToken");
    // A success without the three parts would be cached and handed out as credentials.
    if access_key_id.is_empty() || secret_access_key.is_empty() || session_token.is_empty() {
        return Err(AwsError::Transport(
            "STS answered with incomplete credentials (an empty AccessKeyId, SecretAccessKey or SessionToken)".into(),
        ));
    }
    Ok(StsCredentials {
        access_key_id,
        secret_access_key,
        session_token,
        expiration,
        assumed_role_arn: text(user, "Arn"),
        assumed_role_id: text(user, "AssumedRoleId"),
        subject: text(result, "Subject"),
        subject_type: text(result, "SubjectType"),
        issuer: text(result, "Issuer"),
        audience: text(result, "Audience"),
        name_qualifier: text(result, "NameQualifier"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The example answer of AWS's `AssumeRoleWithSAML` API reference (values shortened).
    const ANSWER: &str = r#"<AssumeRoleWithSAMLResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithSAMLResult>
    <Issuer> https://integ.example.com/idp/shibboleth</Issuer>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/TestSaml</Arn>
      <AssumedRoleId>ARO456EXAMPLE789:TestSaml</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAV3ZUEFP6EXAMPLE</AccessKeyId>
      <SecretAccessKey>8P+SQvWIuLnKhh8d++jpw0nNmQRBZvNEXAMPLEKEY</SecretAccessKey>
      <SessionToken>IQoJb3JpZ2luX2VjEOz////////////////////wEXAMPLE</SessionToken>
      <Expiration>2019-11-01T20:26:47.123Z</Expiration>
    </Credentials>
    <Audience>https://signin.aws.amazon.com/saml</Audience>
    <SubjectType>transient</SubjectType>
    <PackedPolicySize>6</PackedPolicySize>
    <NameQualifier>SbdGOnUkh1i4+EXAMPLExL/jEvs=</NameQualifier>
    <SourceIdentity>SourceIdentityValue</SourceIdentity>
    <Subject>SamlExample</Subject>
  </AssumeRoleWithSAMLResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleWithSAMLResponse>"#;

    #[test]
    fn credentials_and_the_saml_fields_are_read_from_the_answer() {
        let c = parse_assume_role_with_saml(200, ANSWER).unwrap();
        assert_eq!(c.access_key_id, "ASIAV3ZUEFP6EXAMPLE");
        assert_eq!(
            c.secret_access_key,
            "8P+SQvWIuLnKhh8d++jpw0nNmQRBZvNEXAMPLEKEY"
        );
        assert_eq!(
            c.session_token,
            "IQoJb3JpZ2luX2VjEOz////////////////////wEXAMPLE"
        );
        assert_eq!(
            c.expiration,
            "2019-11-01T20:26:47Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            c.assumed_role_arn,
            "arn:aws:sts::123456789012:assumed-role/TestSaml"
        );
        assert_eq!(c.assumed_role_id, "ARO456EXAMPLE789:TestSaml");
        assert_eq!(c.subject, "SamlExample");
        assert_eq!(c.subject_type, "transient");
        assert_eq!(c.issuer, "https://integ.example.com/idp/shibboleth");
        assert_eq!(c.audience, "https://signin.aws.amazon.com/saml");
        assert_eq!(c.name_qualifier, "SbdGOnUkh1i4+EXAMPLExL/jEvs=");
        assert_eq!(c.account_id(), Some("123456789012"));
    }

    #[test]
    fn errors_keep_their_code_and_throttling_is_told_apart() {
        let error = |code: &str| {
            format!(
                r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code><Message>why &amp; how</Message></Error><RequestId>1</RequestId></ErrorResponse>"#
            )
        };
        assert_eq!(
            parse_assume_role_with_saml(403, &error("AccessDenied")),
            Err(AwsError::Service {
                code: "AccessDenied".into(),
                message: "why & how".into()
            })
        );
        for code in THROTTLE_CODES {
            assert_eq!(
                parse_assume_role_with_saml(400, &error(code)),
                Err(AwsError::Throttled("why & how".into()))
            );
        }
    }

    #[test]
    fn an_answer_that_is_not_sts_is_a_transport_error() {
        for (status, body) in [
            (502, "<html>bad gateway</html>"),
            (200, "not xml"),
            (
                500,
                "<ErrorResponse><Error><Message>no code</Message></Error></ErrorResponse>",
            ),
            (
                200,
                "<AssumeRoleWithSAMLResponse><AssumeRoleWithSAMLResult/></AssumeRoleWithSAMLResponse>",
            ),
            (500, ANSWER),
        ] {
            let e = parse_assume_role_with_saml(status, body).unwrap_err();
            assert_eq!(e.code(), "Unreachable", "{status} {body}: {e}");
        }
        let bad_time = ANSWER.replace("2019-11-01T20:26:47.123Z", "tomorrow");
        assert_eq!(
            parse_assume_role_with_saml(200, &bad_time)
                .unwrap_err()
                .code(),
            "Unreachable"
        );
    }

    #[test]
    fn a_success_missing_a_part_of_the_credentials_is_refused() {
        for part in [
            "<AccessKeyId>ASIAV3ZUEFP6EXAMPLE</AccessKeyId>",
            "<SecretAccessKey>8P+SQvWIuLnKhh8d++jpw0nNmQRBZvNEXAMPLEKEY</SecretAccessKey>",
            "<SessionToken>IQoJb3JpZ2luX2VjEOz////////////////////wEXAMPLE</SessionToken>",
        ] {
            let tag = &part[1..part.find('>').unwrap()];
            for body in [
                ANSWER.replace(part, ""),
                ANSWER.replace(part, &format!("<{tag}>  </{tag}>")),
            ] {
                let e = parse_assume_role_with_saml(200, &body).unwrap_err();
                assert_eq!(e.code(), "Unreachable", "{tag}: {e}");
                assert!(e.to_string().contains("incomplete credentials"), "{e}");
            }
        }
    }

    #[test]
    fn the_form_names_the_action_version_and_fields() {
        let request = AssumeRequest {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            principal_arn: "arn:aws:iam::123456789012:saml-provider/p".into(),
            saml_assertion: "PD94+/=".into(),
            duration_seconds: 900,
            region: None,
        };
        let form = assume_role_with_saml_form(&request);
        let get = |k: &str| form.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Action"), Some("AssumeRoleWithSAML"));
        assert_eq!(get("Version"), Some("2011-06-15"));
        assert_eq!(get("RoleArn"), Some("arn:aws:iam::123456789012:role/r"));
        assert_eq!(
            get("PrincipalArn"),
            Some("arn:aws:iam::123456789012:saml-provider/p")
        );
        assert_eq!(get("SAMLAssertion"), Some("PD94+/="));
        assert_eq!(get("DurationSeconds"), Some("900"));
        assert_eq!(
            request_url("https://sts.eu-west-1.amazonaws.com"),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            request_url("http://127.0.0.1:4566/"),
            "http://127.0.0.1:4566/"
        );
        assert_eq!(
            request_url("http://127.0.0.1:4566/sts"),
            "http://127.0.0.1:4566/sts"
        );
    }
}
