//! Signed Responses checked by independent verifiers: xmlsec1 (both signing modes, with the
//! certificate taken from the served metadata) and pysaml2 configured as AWS's service provider.
//! Their evil twins (tampered, signature-wrapped, expired, wrong audience) are rejected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{Harness, ROLE, first_cert_pem, resources, run, unique, venv, write};
use jiff::Timestamp;
use rolegate::saml::aws::RoleSession;
use rolegate::saml::{
    self, AUTHN_UNSPECIFIED, AppSettings, AssertionContent, DocumentIds, SignedResponse,
};

const PROVIDER_ARN: &str = "arn:aws:iam::123456789012:saml-provider/verifier";

fn session() -> RoleSession {
    RoleSession {
        role_arn: ROLE.into(),
        provider_arn: PROVIDER_ARN.into(),
        session_name: "team-a.app".into(),
        duration_seconds: 3600,
        tags: [("team".to_owned(), "a & <b>".to_owned())].into(),
        transitive_tag_keys: vec!["team".into()],
        source_identity: Some("app@team-a".into()),
    }
}

/// A Response signed by the harness's key for app `aws`, with `audience` overriding the app's.
fn sign(h: &Harness, now: Timestamp, audience: Option<&str>) -> SignedResponse {
    let snapshot = h.state.store.current();
    let mut settings = AppSettings::from_app(&snapshot.apps["aws"]).unwrap();
    if let Some(a) = audience {
        settings.audience = a.into();
    }
    let keys = h.state.keys.get("aws").unwrap();
    let attributes = session().attributes();
    let content = AssertionContent {
        name_id: "system:serviceaccount:team-a:app",
        attributes: &attributes,
        authn_context: AUTHN_UNSPECIFIED,
    };
    let ids = DocumentIds {
        response: "_r1".into(),
        assertion: "_a1".into(),
    };
    saml::build_response(&settings, &content, &ids, now, keys.active.as_ref()).unwrap()
}

fn xmlsec1_verify(dir: &std::path::Path, cert_pem: &str, xml: &str) -> (bool, String) {
    let cert = write(dir, "idp.crt", cert_pem);
    let doc = write(dir, "response.xml", xml);
    let (ok, _out, err) = run(Command::new("xmlsec1")
        .arg("--verify")
        .arg("--pubkey-cert-pem")
        .arg(&cert)
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
        ])
        .args([
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:protocol:Response",
        ])
        .arg(&doc));
    (ok, err)
}

fn sp_validate(
    dir: &std::path::Path,
    metadata: &str,
    response_b64: &str,
    now: Timestamp,
) -> (bool, String, String) {
    let md = write(dir, "idp-metadata.xml", metadata);
    let resp = write(dir, "response.b64", response_b64);
    run(Command::new(venv().join("bin/python"))
        .arg(common::repo().join("tests/peers/sp_validate.py"))
        .arg("--idp-metadata")
        .arg(&md)
        .arg("--response")
        .arg(&resp)
        .arg("--now")
        .arg(now.as_second().to_string()))
}

fn b64(xml: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(xml)
}

#[tokio::test]
async fn both_signing_modes_verify_under_xmlsec1_and_pysaml2() {
    for sign_response in [false, true] {
        let h = Harness::start(&resources(&unique("verifier"), sign_response)).await;
        let metadata = h.metadata("aws").await;
        let cert = first_cert_pem(&metadata);
        let now = Timestamp::now();
        let signed = sign(&h, now, None);
        let signature_parent = if sign_response {
            "<samlp:Response"
        } else {
            "<saml:Assertion"
        };
        let parent_at = signed.xml.find(signature_parent).unwrap();
        let sig_at = signed.xml.find("<ds:Signature").unwrap();
        assert!(
            sig_at > parent_at,
            "signature sits inside the signed element"
        );
        assert_eq!(signed.xml.matches("<ds:Signature ").count(), 1);

        let (ok, err) = xmlsec1_verify(h.dir.path(), &cert, &signed.xml);
        assert!(ok, "xmlsec1 rejected signResponse={sign_response}: {err}");

        let (ok, out, err) = sp_validate(h.dir.path(), &metadata, &signed.to_base64(), now);
        assert!(ok, "pysaml2 rejected signResponse={sign_response}: {err}");
        let seen: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(seen["name_id"], "system:serviceaccount:team-a:app");
        assert_eq!(
            seen["name_id_format"],
            "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
        );
        assert_eq!(seen["issuer"], "urn:rolegate:aws");
        assert_eq!(
            seen["signed"],
            if sign_response {
                "response"
            } else {
                "assertion"
            }
        );
        let attrs = &seen["attributes"];
        assert_eq!(
            attrs["https://aws.amazon.com/SAML/Attributes/Role"][0],
            format!("{ROLE},{PROVIDER_ARN}")
        );
        assert_eq!(
            attrs["https://aws.amazon.com/SAML/Attributes/RoleSessionName"][0],
            "team-a.app"
        );
        assert_eq!(
            attrs["https://aws.amazon.com/SAML/Attributes/SessionDuration"][0],
            "3600"
        );
        assert_eq!(
            attrs["https://aws.amazon.com/SAML/Attributes/PrincipalTag:team"][0],
            "a & <b>"
        );
        assert_eq!(
            attrs["https://aws.amazon.com/SAML/Attributes/TransitiveTagKeys"][0],
            "team"
        );
        assert_eq!(
            attrs["https://aws.amazon.com/SAML/Attributes/SourceIdentity"][0],
            "app@team-a"
        );
    }
}

#[tokio::test]
async fn metadata_is_utf8_without_bom_and_lists_the_signing_certificate() {
    let h = Harness::start(&resources(&unique("verifier"), false)).await;
    let response = reqwest::get(format!("{}/samlp/metadata/aws", h.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.starts_with(b"<?xml"), "no BOM, XML declaration first");
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(
        (1_000..10_000_000).contains(&text.len()),
        "IAM takes 1 000 to 10 000 000 characters"
    );
    assert!(text.contains("<md:KeyDescriptor use=\"signing\">"));
    assert!(text.contains(&format!("Location=\"{}/samlp/aws\"", h.url)));
    let missing = reqwest::get(format!("{}/samlp/metadata/nope", h.url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn evil_twins_are_rejected_by_both_verifiers() {
    let h = Harness::start(&resources(&unique("verifier"), false)).await;
    let metadata = h.metadata("aws").await;
    let cert = first_cert_pem(&metadata);
    let now = Timestamp::now();
    let good = sign(&h, now, None);
    assert!(
        xmlsec1_verify(h.dir.path(), &cert, &good.xml).0,
        "the untouched original verifies"
    );

    // Tampered: another role after signing.
    let tampered = good.xml.replace("role/app-reader", "role/app-admin");
    assert_ne!(tampered, good.xml);
    let (ok, err) = xmlsec1_verify(h.dir.path(), &cert, &tampered);
    assert!(
        !ok && err.contains("fail"),
        "xmlsec1 must reject a tampered copy: {err}"
    );
    let (ok, _, err) = sp_validate(h.dir.path(), &metadata, &b64(&tampered), now);
    assert!(!ok, "pysaml2 must reject a tampered copy");
    assert!(err.contains("sp_validate:"), "{err}");

    // Signature wrapping: an evil assertion with the signed one's ID comes first; the signed
    // original is pushed after it.
    let start = good.xml.find("<saml:Assertion").unwrap();
    let end = good.xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    let original = &good.xml[start..end];
    let sig_start = original.find("<ds:Signature").unwrap();
    let sig_end = original.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let evil = format!("{}{}", &original[..sig_start], &original[sig_end..]).replace(
        "system:serviceaccount:team-a:app",
        "system:serviceaccount:team-a:admin",
    );
    let wrapped = format!(
        "{}{}{}{}",
        &good.xml[..start],
        evil,
        original,
        &good.xml[end..]
    );
    let (ok, _) = xmlsec1_verify(h.dir.path(), &cert, &wrapped);
    assert!(!ok, "xmlsec1 must reject a wrapped copy");
    let (ok, _, _) = sp_validate(h.dir.path(), &metadata, &b64(&wrapped), now);
    assert!(!ok, "pysaml2 must reject a wrapped copy");

    // Expired: the untouched document, one second after NotOnOrAfter.
    let after = good.not_on_or_after + jiff::SignedDuration::from_secs(1);
    let (ok, _, err) = sp_validate(h.dir.path(), &metadata, &good.to_base64(), after);
    assert!(!ok, "pysaml2 must reject an expired assertion");
    assert!(err.contains("sp_validate:"), "{err}");
    let (ok, _, _) = sp_validate(h.dir.path(), &metadata, &good.to_base64(), now);
    assert!(ok, "the same document is valid at issue time");

    // Wrong audience: validly signed for another service provider.
    let foreign = sign(&h, now, Some("https://sp.example.org/saml"));
    assert!(
        xmlsec1_verify(h.dir.path(), &cert, &foreign.xml).0,
        "the signature itself is fine"
    );
    let (ok, _, err) = sp_validate(h.dir.path(), &metadata, &foreign.to_base64(), now);
    assert!(!ok, "pysaml2 must reject a wrong audience");
    assert!(err.to_lowercase().contains("audience"), "{err}");
}

/// An STS endpoint that keeps every `SAMLAssertion` it is sent and refuses the call (a
/// non-retried error), so the assertion the server really built can be checked.
async fn capturing_sts() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |form: axum::extract::Form<std::collections::HashMap<String, String>>| {
            let kept = std::sync::Arc::clone(&kept);
            async move {
                if let Some(assertion) = form.get("SAMLAssertion") {
                    kept.lock().unwrap().push(assertion.clone());
                }
                (
                    axum::http::StatusCode::FORBIDDEN,
                    [("content-type", "text/xml")],
                    r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>captured</Message></Error><RequestId>1</RequestId></ErrorResponse>"#,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_assertion_carries_exactly_the_reserved_tags_under_pysaml2() {
    let (sts, seen) = capturing_sts().await;
    let name = unique("tags");
    let h = Harness::start_with_sts(&resources(&name, false), sts).await;
    let token = h.pod_token(
        "system:serviceaccount:team-a:app",
        &["rolegate"],
        3600,
        "uploader-5f7c9",
    );
    let (status, body) = h.credentials(&token, Some(ROLE)).await;
    assert_eq!(status, 403, "the stub STS refuses: {body}");
    let assertion = seen
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("STS was called");

    let (ok, out, err) = sp_validate(
        h.dir.path(),
        &h.metadata("aws").await,
        &assertion,
        Timestamp::now(),
    );
    assert!(ok, "pysaml2 rejected the server's assertion: {err}");
    let seen: serde_json::Value = serde_json::from_str(&out).unwrap();
    let attrs = seen["attributes"].as_object().unwrap();
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let uid = claims["kubernetes.io"]["pod"]["uid"].as_str().unwrap();
    const TAG: &str = "https://aws.amazon.com/SAML/Attributes/PrincipalTag:";
    let tags: std::collections::BTreeMap<&str, &str> = attrs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(TAG)?, v[0].as_str()?)))
        .collect();
    assert_eq!(
        tags,
        std::collections::BTreeMap::from([
            ("kubernetes-namespace", "team-a"),
            ("kubernetes-service-account", "app"),
            ("kubernetes-pod-name", "uploader-5f7c9"),
            ("kubernetes-pod-uid", uid),
            ("rolegate-cluster", "test-cluster"),
            // The mapping's own tag, `team: "{namespace}"`.
            ("team", "team-a"),
        ])
    );
    let mut transitive: Vec<&str> =
        attrs["https://aws.amazon.com/SAML/Attributes/TransitiveTagKeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
    transitive.sort_unstable();
    assert_eq!(
        transitive,
        [
            "kubernetes-namespace",
            "kubernetes-pod-name",
            "kubernetes-pod-uid",
            "kubernetes-service-account",
            "rolegate-cluster",
        ]
    );
}
