//! The server remembers a verified token by its SHA-256 so that a cached answer costs no parse
//! and no signature check (issue 15). What it must keep refusing, each case first remembered
//! as good, then changed:
//! - a token past its expiry;
//! - a token whose Connection changed (audience, key location) or whose key left the JWKS;
//! - a RoleMapping deleted after a cached success (the policy runs on every request);
//! - another token with the same subject (forged, wrong audience), which shares nothing.
//!
//! And the credential cache: a subject removed (its sessions revoked in AWS) and granted again
//! gets a new session, never the one issued before the removal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, ISSUER, ROLE, resources, unique};
use jiff::{SignedDuration, Timestamp};
use rolegate::tokens::{Accept, TokenError};

const APP: &str = "system:serviceaccount:team-a:app";

/// A token for `subject` signed with `key` (naming `key`'s kid), valid `ttl` seconds from now.
fn token_with(key: &str, subject: &str, audiences: &[&str], ttl: i64) -> String {
    let spec = rolegate::dev::TokenSpec {
        issuer: ISSUER.into(),
        subject: subject.into(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        ttl_seconds: ttl,
        pod: Some("app-7d4b9c".into()),
        kid: None,
    };
    rolegate::dev::token(key, &spec, Timestamp::now()).unwrap()
}

async fn verify(h: &Harness, token: &str, now: Timestamp) -> Result<String, TokenError> {
    let snapshot = h.state.store.current();
    h.state
        .verifier
        .verify(token, &snapshot, Accept::ServiceAccounts, now)
        .await
        .map(|v| v.subject)
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let h = Harness::start(&resources(&unique("cache-exp"), false)).await;
    let token = h.token(APP, &["rolegate"], 600);
    let now = Timestamp::now();
    assert_eq!(verify(&h, &token, now).await.unwrap(), APP);
    assert_eq!(h.state.verifier.remembered(), 1);
    // A second use is a hit.
    assert_eq!(verify(&h, &token, now).await.unwrap(), APP);

    let later = now + SignedDuration::from_secs(601);
    let refused = verify(&h, &token, later).await.unwrap_err();
    assert!(matches!(refused, TokenError::Expired(_)), "{refused:?}");
    // What no longer verifies is forgotten.
    assert_eq!(h.state.verifier.remembered(), 0);
    let refused = verify(&h, &token, later).await.unwrap_err();
    assert!(matches!(refused, TokenError::Expired(_)), "{refused:?}");
}

#[tokio::test]
async fn a_changed_connection_is_applied_to_a_remembered_token() {
    let h = Harness::start(&resources(&unique("cache-conn"), false)).await;
    let token = h.sa_token("team-a", "app");
    let now = Timestamp::now();
    verify(&h, &token, now).await.unwrap();
    assert_eq!(h.state.verifier.remembered(), 1);

    // The Connection no longer accepts the token's audience.
    h.change_resources(|y| y.replace("audiences: [rolegate]", "audiences: [rolegate-v2]"));
    let refused = verify(&h, &token, now).await.unwrap_err();
    assert!(
        matches!(refused, TokenError::WrongAudience { .. }),
        "{refused:?}"
    );
    assert_eq!(h.state.verifier.remembered(), 0);

    // Back to the audience: the token is verified and remembered again.
    h.change_resources(|y| y.replace("audiences: [rolegate-v2]", "audiences: [rolegate]"));
    verify(&h, &token, now).await.unwrap();
    assert_eq!(h.state.verifier.remembered(), 1);

    // Only the key location changes: the Connection now takes its keys from another JWKS,
    // which does not hold the key that signed the remembered token. The signature is checked
    // again, and fails.
    let other_key = rolegate::dev::generate_key().unwrap();
    let config = h.dir.path().join("config");
    std::fs::write(
        config.join("other-jwks.json"),
        rolegate::dev::jwks(&other_key).unwrap().to_string(),
    )
    .unwrap();
    h.change_resources(|y| y.replace("jwksUri: file:jwks.json", "jwksUri: file:other-jwks.json"));
    let refused = verify(&h, &token, now).await.unwrap_err();
    assert!(
        matches!(
            refused,
            TokenError::UnknownKey { .. } | TokenError::BadSignature(_)
        ),
        "{refused:?}"
    );
    assert_eq!(h.state.verifier.remembered(), 0);
    // The token signed by the new key is accepted through the new JWKS.
    let new_token = token_with(&other_key, APP, &["rolegate"], 600);
    assert_eq!(verify(&h, &new_token, now).await.unwrap(), APP);

    // The Connection is deleted: nothing of it is trusted any more.
    h.change_resources(|y| y.replace("kind: Connection", "kind: ConfigMap"));
    let refused = verify(&h, &new_token, now).await.unwrap_err();
    assert!(
        matches!(refused, TokenError::UntrustedIssuer(_)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_remembered_token_whose_key_left_the_jwks_is_refused() {
    let h = Harness::start(&resources(&unique("cache-kid"), false)).await;
    let old = h.sa_token("team-a", "app");
    let now = Timestamp::now();
    verify(&h, &old, now).await.unwrap();

    // The issuer rotates: its JWKS now holds only the new key. The first token naming the new
    // key makes the verifier fetch the set again.
    let new_key = rolegate::dev::generate_key().unwrap();
    std::fs::write(
        h.dir.path().join("config").join("jwks.json"),
        rolegate::dev::jwks(&new_key).unwrap().to_string(),
    )
    .unwrap();
    let new = token_with(&new_key, APP, &["rolegate"], 600);
    assert_eq!(verify(&h, &new, now).await.unwrap(), APP);

    let refused = verify(&h, &old, now).await.unwrap_err();
    assert!(
        matches!(refused, TokenError::UnknownKey { .. }),
        "{refused:?}"
    );
    // And at the endpoint, in the same words.
    let (status, body) = h.credentials(&old, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("key id"),
        "{body}"
    );
}

#[tokio::test]
async fn a_mapping_deleted_after_a_cached_success_refuses_the_next_request() {
    let h = Harness::start(&resources(&unique("cache-map"), false)).await;
    let token = h.sa_token("team-a", "app");
    for _ in 0..2 {
        // The second answer comes from both caches: the remembered token and the credentials.
        let (status, body) = h.credentials(&token, Some(ROLE)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(h.state.verifier.remembered(), 1);

    h.change_resources(|y| {
        y.replace(
            "subjects: [{kind: ServiceAccount, name: app}, {kind: ServiceAccount, name: multi}]",
            "subjects: [{kind: ServiceAccount, name: multi}]",
        )
    });
    let (status, body) = h.credentials(&token, Some(ROLE)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.get("AccessKeyId").is_none(), "{body}");
    // The token itself is still good: only the grant went away.
    assert_eq!(h.state.verifier.remembered(), 1);
}

#[tokio::test]
async fn a_subject_removed_and_granted_again_gets_a_new_session_not_the_revoked_one() {
    let h = Harness::start(&resources(&unique("cache-regrant"), false)).await;
    let token = h.sa_token("team-a", "app");
    let multi = h.sa_token("team-a", "multi");
    let ask = |token: String| {
        let h = &h;
        async move {
            let (status, body) = h.credentials(&token, Some(ROLE)).await;
            assert_eq!(status, 200, "{body}");
            body["AccessKeyId"].as_str().unwrap().to_owned()
        }
    };
    let first = ask(token.clone()).await;
    assert_eq!(ask(token.clone()).await, first, "a cached session");
    let other = ask(multi.clone()).await;
    assert_eq!(h.metric("rolegate_sts_calls_total"), 2.0);

    let full = "subjects: [{kind: ServiceAccount, name: app}, {kind: ServiceAccount, name: multi}]";
    let without_app = "subjects: [{kind: ServiceAccount, name: multi}]";
    h.change_resources(|y| y.replace(full, without_app));
    let (status, body) = h.credentials(&token, Some(ROLE)).await;
    assert_eq!(status, 403, "{body}");
    // Granted again: the session cached before the removal may be denied in AWS by now
    // (revokeOnDelete), so it is not handed out again.
    h.change_resources(|y| y.replace(without_app, full));
    let again = ask(token).await;
    assert_ne!(
        again, first,
        "the session issued before the removal came back"
    );
    assert_eq!(h.metric("rolegate_sts_calls_total"), 3.0);
    // The role's other sessions are forgotten too, at the cost of one STS call.
    assert_ne!(ask(multi).await, other);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 4.0);
}

#[tokio::test]
async fn another_token_with_the_same_subject_shares_nothing_with_a_remembered_one() {
    let h = Harness::start(&resources(&unique("cache-same"), false)).await;
    let good = h.sa_token("team-a", "app");
    let now = Timestamp::now();
    verify(&h, &good, now).await.unwrap();

    // Same subject, issuer and kid, signed by a key the JWKS does not hold.
    let attacker = rolegate::dev::generate_key().unwrap();
    let forged = rolegate::dev::token(
        &attacker,
        &rolegate::dev::TokenSpec {
            issuer: ISSUER.into(),
            subject: APP.into(),
            audiences: vec!["rolegate".into()],
            ttl_seconds: 600,
            pod: Some("app-7d4b9c".into()),
            kid: Some(rolegate::dev::key_id(&h.sa_key).unwrap()),
        },
        now,
    )
    .unwrap();
    let refused = verify(&h, &forged, now).await.unwrap_err();
    assert!(
        matches!(refused, TokenError::BadSignature(_)),
        "{refused:?}"
    );
    // Same subject, genuinely signed, for another audience.
    let elsewhere = h.token(APP, &["vault"], 600);
    let refused = verify(&h, &elsewhere, now).await.unwrap_err();
    assert!(
        matches!(refused, TokenError::WrongAudience { .. }),
        "{refused:?}"
    );
    // The good token was not disturbed, and only it is remembered.
    assert_eq!(h.state.verifier.remembered(), 1);
    assert_eq!(verify(&h, &good, now).await.unwrap(), APP);
    // A second good token of the same subject (the kubelet's next one) is remembered on its own.
    let next = h.token(APP, &["rolegate"], 1800);
    assert_ne!(next, good);
    assert_eq!(verify(&h, &next, now).await.unwrap(), APP);
    assert_eq!(h.state.verifier.remembered(), 2);
}
