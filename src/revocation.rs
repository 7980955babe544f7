//! PURE: revoking sessions already issued when a RoleMapping (or one of its subjects) goes
//! away. AWS cannot end a session early, but a role's policies are evaluated on every call, so
//! an inline policy that denies everything to sessions of those subjects issued before now
//! (`aws:TokenIssueTime` with `saml:sub`) revokes them. Once every such session has expired
//! (now + the mapping's session duration) the policy is no longer needed and is removed. The
//! policy carries its own removal time in its `Sid`, so whoever sweeps needs nothing else.

use std::collections::BTreeSet;

use aws_lc_rs::digest;
use jiff::Timestamp;

use crate::crd::{RoleMapping, SubjectKind};

/// Prefix of the inline policies rolegate puts on roles to revoke sessions.
pub const POLICY_PREFIX: &str = "rolegate-revoke-";
const SID_PREFIX: &str = "RolegateRevokeUntil";

/// An inline deny policy to put on a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The role's name (the last part of its ARN), as `PutRolePolicy` takes it.
    pub role_name: String,
    /// The inline policy's name, `rolegate-revoke-<hash>`.
    pub policy_name: String,
    /// The policy document, JSON.
    pub document: String,
    /// When every revoked session has expired and the policy may go.
    pub remove_after: Timestamp,
}

/// The `saml:sub` values of the subjects of `mapping` that a revocation can name: service
/// accounts (`system:serviceaccount:<ns>:<name>`) and users. A group's members are only known
/// at sign-in, so removing a group cannot be revoked by subject.
pub fn saml_subs(mapping: &RoleMapping) -> BTreeSet<String> {
    let namespace = mapping.metadata.namespace.as_deref().unwrap_or_default();
    mapping
        .spec
        .subjects
        .iter()
        .filter_map(|s| match s.kind {
            SubjectKind::ServiceAccount => {
                Some(format!("system:serviceaccount:{namespace}:{}", s.name))
            }
            SubjectKind::User => Some(s.name.clone()),
            SubjectKind::Group => None,
        })
        .collect()
}

/// The subjects `before` named that `after` no longer grants the same role: all of them when
/// the mapping is gone (`after` is `None`) or now names another role.
pub fn removed_subjects(before: &RoleMapping, after: Option<&RoleMapping>) -> BTreeSet<String> {
    let old = saml_subs(before);
    match after {
        Some(a) if a.spec.role_arn == before.spec.role_arn => {
            let new = saml_subs(a);
            old.difference(&new).cloned().collect()
        }
        _ => old,
    }
}

/// PURE: what a reload from `before` to `after` revokes: for each mapping with
/// `revokeOnDelete` that disappeared or lost subjects (matched by namespace and name), the
/// provider whose IAM access writes the policy, and the policy.
pub fn between(
    before: &[RoleMapping],
    after: &[RoleMapping],
    now: Timestamp,
) -> Vec<(String, Revocation)> {
    let id = |m: &RoleMapping| (m.metadata.namespace.clone(), m.metadata.name.clone());
    before
        .iter()
        .filter(|m| m.spec.revoke_on_delete)
        .filter_map(|old| {
            let new = after.iter().find(|n| id(n) == id(old));
            let subjects = removed_subjects(old, new);
            revocation(
                &old.spec.role_arn,
                &subjects,
                now,
                old.spec.session_duration,
            )
            .map(|r| (old.spec.provider.clone(), r))
        })
        .collect()
}

/// PURE: the roles whose cached sessions must be forgotten when the mappings change from
/// `before` to `after`: the role of every mapping that is gone, now names another role, was
/// replaced by a new object (another `uid`), is being deleted, or lost a subject of any kind.
/// A session cached before such a change may have been revoked in AWS, so handing it out again
/// when the subject is granted anew would give a pod credentials AWS denies. The server forgets
/// every session of the role (others of it cost one STS call each at their next request), as
/// the cache cannot tell a person's group membership from its key.
pub fn roles_losing_subjects(before: &[RoleMapping], after: &[RoleMapping]) -> BTreeSet<String> {
    // Looked up by namespace and name: this runs on every snapshot change of a cluster.
    let after: std::collections::HashMap<_, _> = after
        .iter()
        .map(|m| ((&m.metadata.namespace, &m.metadata.name), m))
        .collect();
    before
        .iter()
        .filter(|old| {
            match after
                .get(&(&old.metadata.namespace, &old.metadata.name))
                .filter(|new| new.metadata.uid == old.metadata.uid)
            {
                // The deletion starts: the mapping grants nothing from now on.
                Some(new) if new.metadata.deletion_timestamp.is_some() => {
                    old.metadata.deletion_timestamp.is_none()
                }
                Some(new) if new.spec.role_arn == old.spec.role_arn => old
                    .spec
                    .subjects
                    .iter()
                    .any(|s| !new.spec.subjects.contains(s)),
                Some(_) | None => true,
            }
        })
        .map(|old| old.spec.role_arn.clone())
        .collect()
}

/// The name of a role from its ARN, `arn:aws:iam::<account>:role/<path>/<name>`.
pub fn role_name(role_arn: &str) -> Option<&str> {
    let resource = role_arn.split(':').nth(5)?;
    let rest = resource.strip_prefix("role/")?;
    rest.rsplit('/').next().filter(|n| !n.is_empty())
}

/// The deny policy revoking, on `role_arn`, every session of `subjects` issued before `now`;
/// `max_session_seconds` is the longest such a session can live. `None` when there is nothing
/// to revoke or the ARN names no role.
pub fn revocation(
    role_arn: &str,
    subjects: &BTreeSet<String>,
    now: Timestamp,
    max_session_seconds: u32,
) -> Option<Revocation> {
    if subjects.is_empty() {
        return None;
    }
    let role_name = role_name(role_arn)?.to_owned();
    // Whole seconds: IAM compares dates at that precision, and the Sid must be stable.
    let issued_before = Timestamp::from_second(now.as_second()).ok()?;
    let remove_after = issued_before
        .checked_add(jiff::SignedDuration::from_secs(i64::from(
            max_session_seconds,
        )))
        .ok()?;
    let subs: Vec<&String> = subjects.iter().collect();
    let document = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": format!("{SID_PREFIX}{}", remove_after.as_second()),
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "DateLessThan": {
                    "aws:TokenIssueTime": issued_before.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
                },
                "StringEquals": {"saml:sub": subs},
            },
        }],
    })
    .to_string();
    let mut input = issued_before.as_second().to_string();
    for s in subjects {
        input.push('\n');
        input.push_str(s);
    }
    let hash = digest::digest(&digest::SHA256, input.as_bytes());
    let hex: String = hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(Revocation {
        role_name,
        policy_name: format!("{POLICY_PREFIX}{hex}"),
        document,
        remove_after,
    })
}

/// When a revocation policy rolegate wrote may be removed, read from its `Sid`; `None` for a
/// document rolegate did not write.
pub fn remove_after(document: &str) -> Option<Timestamp> {
    let value: serde_json::Value = serde_json::from_str(document).ok()?;
    let sid = value.get("Statement")?.get(0)?.get("Sid")?.as_str()?;
    let secs: i64 = sid.strip_prefix(SID_PREFIX)?.parse().ok()?;
    Timestamp::from_second(secs).ok()
}

/// Whether the inline policy `name` with `document` is a revocation whose sessions have all
/// expired at `now`, so the sweep removes it. Policies rolegate did not write are never due.
pub fn due_for_removal(name: &str, document: &str, now: Timestamp) -> bool {
    name.starts_with(POLICY_PREFIX) && remove_after(document).is_some_and(|t| now >= t)
}

/// A revocation policy recorded as pending: `(annotation key, role name, policy name, remove
/// after)`, read from annotations `<prefix><policy>: "<role> <unix seconds>"`.
pub type Pending = (String, String, String, Timestamp);

/// PURE: the pending revocations among `annotations` (keys starting with `prefix`), split into
/// those due for removal at `now` and the earliest time one of the others becomes due.
pub fn pending(
    annotations: &std::collections::BTreeMap<String, String>,
    prefix: &str,
    now: Timestamp,
) -> (Vec<Pending>, Option<Timestamp>) {
    let mut due = Vec::new();
    let mut next: Option<Timestamp> = None;
    for (key, value) in annotations {
        let Some(policy) = key.strip_prefix(prefix) else {
            continue;
        };
        let Some((role, secs)) = value.split_once(' ') else {
            continue;
        };
        let Some(at) = secs
            .parse::<i64>()
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
        else {
            continue;
        };
        if now >= at {
            due.push((key.clone(), role.to_owned(), policy.to_owned(), at));
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::crd::{RoleMappingSpec, SubjectRef};

    fn mapping(subjects: &[(SubjectKind, &str)]) -> RoleMapping {
        let spec: RoleMappingSpec = serde_json::from_value(serde_json::json!({
            "provider": "acct",
            "roleArn": "arn:aws:iam::123456789012:role/team/app-reader",
            "subjects": [],
        }))
        .unwrap();
        let mut m = RoleMapping::new("m", spec);
        m.metadata.namespace = Some("team-a".into());
        m.spec.subjects = subjects
            .iter()
            .map(|(kind, name)| SubjectRef {
                kind: *kind,
                name: (*name).into(),
                connection: None,
            })
            .collect();
        m
    }

    #[test]
    fn the_roles_losing_a_subject_are_those_whose_sessions_are_forgotten() {
        let role = "arn:aws:iam::123456789012:role/team/app-reader".to_owned();
        let both = mapping(&[
            (SubjectKind::ServiceAccount, "app"),
            (SubjectKind::Group, "devs"),
        ]);
        let one = vec![role];
        let roles = |before: &[RoleMapping], after: &[RoleMapping]| {
            roles_losing_subjects(before, after)
                .into_iter()
                .collect::<Vec<_>>()
        };
        // Unchanged, or only gaining a subject: nothing to forget.
        assert!(roles(std::slice::from_ref(&both), std::slice::from_ref(&both)).is_empty());
        let only_app = mapping(&[(SubjectKind::ServiceAccount, "app")]);
        assert!(roles(std::slice::from_ref(&only_app), std::slice::from_ref(&both)).is_empty());
        // Gone, losing a group or a service account, or naming another role.
        assert_eq!(roles(std::slice::from_ref(&both), &[]), one);
        assert_eq!(
            roles(std::slice::from_ref(&both), std::slice::from_ref(&only_app)),
            one
        );
        let only_group = mapping(&[(SubjectKind::Group, "devs")]);
        assert_eq!(
            roles(
                std::slice::from_ref(&both),
                std::slice::from_ref(&only_group)
            ),
            one
        );
        let mut moved = both.clone();
        moved.spec.role_arn = "arn:aws:iam::123456789012:role/other".into();
        assert_eq!(
            roles(std::slice::from_ref(&both), std::slice::from_ref(&moved)),
            one
        );
        // Deleted and created again under the same name between two snapshots: a new object.
        let mut old = both.clone();
        old.metadata.uid = Some("uid-1".into());
        let mut recreated = both.clone();
        recreated.metadata.uid = Some("uid-2".into());
        assert_eq!(
            roles(std::slice::from_ref(&old), std::slice::from_ref(&recreated)),
            one
        );
        // Being deleted (its finalizer holds it): forgotten once, when the deletion starts.
        let mut deleting = old.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(
            roles(std::slice::from_ref(&old), std::slice::from_ref(&deleting)),
            one
        );
        assert!(
            roles(
                std::slice::from_ref(&deleting),
                std::slice::from_ref(&deleting)
            )
            .is_empty()
        );
        assert_eq!(roles(std::slice::from_ref(&deleting), &[]), one);
    }

    #[test]
    fn the_deny_names_the_subjects_and_the_issue_time_and_expires_after_the_session() {
        let m = mapping(&[
            (SubjectKind::ServiceAccount, "app"),
            (SubjectKind::User, "ada"),
            (SubjectKind::Group, "admins"),
        ]);
        assert!(m.spec.revoke_on_delete, "revokeOnDelete defaults to true");
        let now: Timestamp = "2026-12-02T18:00:00.750Z".parse().unwrap();
        let r = revocation(&m.spec.role_arn, &removed_subjects(&m, None), now, 3600).unwrap();
        assert_eq!(r.role_name, "app-reader");
        assert!(r.policy_name.starts_with("rolegate-revoke-"));
        let doc: serde_json::Value = serde_json::from_str(&r.document).unwrap();
        let statement = &doc["Statement"][0];
        assert_eq!(statement["Effect"], "Deny");
        assert_eq!(statement["Action"], "*");
        assert_eq!(statement["Resource"], "*");
        assert_eq!(
            statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
            "2026-12-02T18:00:00Z"
        );
        assert_eq!(
            statement["Condition"]["StringEquals"]["saml:sub"],
            serde_json::json!(["ada", "system:serviceaccount:team-a:app"])
        );
        assert_eq!(r.remove_after, "2026-12-02T19:00:00Z".parse().unwrap());
        assert_eq!(remove_after(&r.document), Some(r.remove_after));
        let before = "2026-12-02T18:59:59Z".parse().unwrap();
        assert!(!due_for_removal(&r.policy_name, &r.document, before));
        assert!(due_for_removal(&r.policy_name, &r.document, r.remove_after));
        assert!(
            !due_for_removal("someone-elses", &r.document, r.remove_after),
            "only rolegate's own policies are swept"
        );
    }

    #[test]
    fn a_reload_revokes_removed_mappings_and_subjects_unless_told_not_to() {
        let both = mapping(&[
            (SubjectKind::ServiceAccount, "app"),
            (SubjectKind::ServiceAccount, "job"),
        ]);
        let one = mapping(&[(SubjectKind::ServiceAccount, "app")]);
        let now = Timestamp::UNIX_EPOCH;
        let gone = between(std::slice::from_ref(&both), &[], now);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "acct");
        assert!(
            gone[0]
                .1
                .document
                .contains("system:serviceaccount:team-a:job")
        );
        let shrunk = between(std::slice::from_ref(&both), std::slice::from_ref(&one), now);
        assert!(!shrunk[0].1.document.contains(":app\""));
        assert!(between(std::slice::from_ref(&one), std::slice::from_ref(&one), now).is_empty());
        let mut off = both.clone();
        off.spec.revoke_on_delete = false;
        assert!(between(&[off], &[], now).is_empty());
    }

    #[test]
    fn pending_revocations_are_due_at_their_time() {
        let annotations = [
            (
                "revoke.rolegate.dev/rolegate-revoke-a".to_owned(),
                "app 100".to_owned(),
            ),
            (
                "revoke.rolegate.dev/rolegate-revoke-b".to_owned(),
                "app 200".to_owned(),
            ),
            (
                "revoke.rolegate.dev/broken".to_owned(),
                "app soon".to_owned(),
            ),
            ("other/x".to_owned(), "app 1".to_owned()),
        ]
        .into();
        let at = |s| Timestamp::from_second(s).unwrap();
        let (due, next) = pending(&annotations, "revoke.rolegate.dev/", at(150));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, "app");
        assert_eq!(due[0].2, "rolegate-revoke-a");
        assert_eq!(next, Some(at(200)));
        let (due, next) = pending(&annotations, "revoke.rolegate.dev/", at(99));
        assert!(due.is_empty());
        assert_eq!(next, Some(at(100)));
    }

    #[test]
    fn only_subjects_that_lose_the_role_are_revoked() {
        let before = mapping(&[
            (SubjectKind::ServiceAccount, "app"),
            (SubjectKind::ServiceAccount, "job"),
        ]);
        let after = mapping(&[(SubjectKind::ServiceAccount, "app")]);
        assert_eq!(
            removed_subjects(&before, Some(&after)),
            ["system:serviceaccount:team-a:job".to_owned()].into()
        );
        assert!(removed_subjects(&before, Some(&before)).is_empty());
        let mut moved = before.clone();
        moved.spec.role_arn = "arn:aws:iam::123456789012:role/other".into();
        assert_eq!(removed_subjects(&before, Some(&moved)).len(), 2);
        let now = Timestamp::UNIX_EPOCH;
        assert!(revocation(&before.spec.role_arn, &BTreeSet::new(), now, 900).is_none());
        assert_eq!(role_name("arn:aws:iam::1:role/a/b/c"), Some("c"));
        assert_eq!(role_name("arn:aws:iam::1:user/c"), None);
    }
}
