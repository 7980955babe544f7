//! Assertion build+sign throughput, beside a bare RSA-2048 PKCS#1 v1.5 SHA-256 signature with
//! the same key in the same run: the difference is what the XML work costs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rolegate::crd::DigestAlgorithm;
use rolegate::keys::SigningKey;
use rolegate::saml::aws::RoleSession;
use rolegate::saml::{
    self, AUTHN_UNSPECIFIED, AppSettings, AssertionContent, DocumentIds, Signer as _,
};

fn bench(c: &mut Criterion) {
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let (key, _) = SigningKey::generate("urn:rolegate:aws", 2048, 365, now).unwrap();
    let session = RoleSession {
        role_arn: "arn:aws:iam::123456789012:role/app-reader".into(),
        provider_arn: "arn:aws:iam::123456789012:saml-provider/rolegate".into(),
        session_name: "team-a.app".into(),
        duration_seconds: 3600,
        tags: [("team".to_owned(), "a".to_owned())].into(),
        transitive_tag_keys: vec![],
        source_identity: None,
    };
    let attributes = session.attributes();
    let content = AssertionContent {
        name_id: "system:serviceaccount:team-a:app",
        attributes: &attributes,
        authn_context: AUTHN_UNSPECIFIED,
    };
    let ids = DocumentIds {
        response: "_0123456789abcdef0123456789abcdef".into(),
        assertion: "_fedcba9876543210fedcba9876543210".into(),
    };
    let mut group = c.benchmark_group("saml");
    group.throughput(Throughput::Elements(1));
    for sign_response in [false, true] {
        let settings = AppSettings {
            issuer: "urn:rolegate:aws".into(),
            audience: "https://signin.aws.amazon.com/saml".into(),
            recipient: "https://signin.aws.amazon.com/saml".into(),
            name_id_format: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into(),
            lifetime_seconds: 300,
            sign_response,
            digest: DigestAlgorithm::Sha256,
            destination: "https://signin.aws.amazon.com/saml".into(),
            authn_context: None,
            typed_attributes: true,
            name_format: true,
        };
        let name = if sign_response {
            "build_sign_response"
        } else {
            "build_sign_assertion"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                saml::build_response(black_box(&settings), black_box(&content), &ids, now, &key)
                    .unwrap()
            });
        });
    }
    // The reference: one RSA signature over a SignedInfo-sized message, same key, same run.
    let signed_info = vec![b'x'; 700];
    group.bench_function("rsa2048_sign_only", |b| {
        b.iter(|| key.sign(black_box(&signed_info)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
