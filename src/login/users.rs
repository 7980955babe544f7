//! Static users (a Secret's `users.yaml` with bcrypt hashes) and the limit on wrong passwords.
//! The limiter is in memory, so it counts per replica.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

/// The Secret key that lists the users.
pub const USERS_KEY: &str = "users.yaml";

/// One user of a `static` Connection.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StaticUser {
    /// The name people type, and the subject RoleMapping `User` subjects match.
    pub username: String,
    /// bcrypt hash of the password (`$2b$…`).
    pub bcrypt_hash: String,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Groups, matched by RoleMapping `Group` subjects.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl std::fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticUser")
            .field("username", &self.username)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// The users in `secret`'s `users.yaml`. `name` only labels messages.
///
/// # Errors
/// A missing key or a document that is not a list of users.
pub fn users_from_secret(secret: &Secret, name: &str) -> Result<Vec<StaticUser>, String> {
    let raw = crate::store::secret_value(secret, USERS_KEY)
        .ok_or_else(|| format!("Secret {name:?} has no {USERS_KEY}"))?;
    let text = std::str::from_utf8(raw)
        .map_err(|_| format!("{USERS_KEY} of Secret {name:?} is not UTF-8"))?;
    serde_saphyr::from_str(text)
        .map_err(|e| format!("{USERS_KEY} of Secret {name:?} is not a list of users: {e}"))
}

// A valid bcrypt hash (cost 10) of a random string, checked against when there are no users.
const DECOY_HASH: &str = "$2b$10$3euPcmQFCiblsZeEu5s7p.9OVHgeHWFDk9nhMqZ0m/3pd/lhwZgES";

/// The user whose name and password match. Always runs one bcrypt check, at the cost of a real
/// user's hash when the name is unknown, so timing does not tell whether a name exists.
pub fn authenticate<'u>(
    users: &'u [StaticUser],
    username: &str,
    password: &str,
) -> Option<&'u StaticUser> {
    let user = users.iter().find(|u| u.username == username);
    let hash = user
        .or_else(|| users.first())
        .map_or(DECOY_HASH, |u| u.bcrypt_hash.as_str());
    let ok = bcrypt::verify(password, hash).unwrap_or(false);
    user.filter(|_| ok)
}

/// Wrong passwords allowed per (user, address) within [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// Wrong passwords allowed per address, whatever the user, within [`WINDOW`]: bounds password
/// spraying over many names, and the bcrypt work one address can cause.
pub const MAX_FAILURES_PER_ADDRESS: usize = 50;
/// The user part of the key that counts every user of one address.
pub const ANY_USER: &str = "*";
/// The window failures are counted over.
pub const WINDOW: SignedDuration = SignedDuration::from_secs(15 * 60);

/// Counts wrong passwords per (connection, user, client address), with [`ANY_USER`] standing
/// for every user of an address; refuses further attempts once a limit is reached within
/// [`WINDOW`]. In memory: each replica counts on its own.
#[derive(Debug, Default)]
pub struct Attempts(Mutex<HashMap<(String, String, String), Vec<Timestamp>>>);

impl Attempts {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String, String), Vec<Timestamp>>) -> R,
    ) -> R {
        match self.0.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// `Err(when)` if attempts for `key` are refused until `when`: `limit` failures fell within
    /// the window.
    ///
    /// # Errors
    /// The instant the oldest counted failure leaves the window.
    pub fn check(
        &self,
        key: &(String, String, String),
        limit: usize,
        now: Timestamp,
    ) -> Result<(), Timestamp> {
        self.with(|map| {
            let Some(failures) = map.get_mut(key) else {
                return Ok(());
            };
            failures.retain(|t| *t + WINDOW > now);
            if failures.len() >= limit {
                let oldest = failures.iter().min().copied().unwrap_or(now);
                Err(oldest + WINDOW)
            } else {
                Ok(())
            }
        })
    }

    /// Records a wrong password for `key`. Old entries of every key are dropped as it goes, so
    /// the map stays bounded by recent failures.
    pub fn fail(&self, key: (String, String, String), now: Timestamp) {
        self.with(|map| {
            if map.len() > 10_000 {
                map.retain(|_, v| v.iter().any(|t| *t + WINDOW > now));
            }
            map.entry(key).or_default().push(now);
        });
    }

    /// Forgets the failures of `key` after a successful sign-in.
    pub fn succeed(&self, key: &(String, String, String)) {
        self.with(|map| {
            map.remove(key);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn users() -> Vec<StaticUser> {
        let hash = bcrypt::hash("correct horse", 4).unwrap();
        vec![StaticUser {
            username: "alice".into(),
            bcrypt_hash: hash,
            email: Some("alice@example.test".into()),
            name: Some("Alice".into()),
            groups: vec!["admins".into()],
        }]
    }

    #[test]
    fn authenticates_only_the_right_password() {
        let users = users();
        assert_eq!(
            authenticate(&users, "alice", "correct horse").map(|u| u.username.as_str()),
            Some("alice")
        );
        assert!(authenticate(&users, "alice", "wrong").is_none());
        assert!(authenticate(&users, "bob", "correct horse").is_none());
        assert!(
            bcrypt::verify("x", DECOY_HASH).is_ok(),
            "the decoy is a valid hash"
        );
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let users = users();
        assert!(!format!("{users:?}").contains("$2"));
    }

    #[test]
    fn reads_users_from_a_secret() {
        let yaml = "- username: alice\n  bcryptHash: \"$2b$04$x\"\n  groups: [admins]\n";
        let secret = Secret {
            string_data: Some([(USERS_KEY.to_owned(), yaml.to_owned())].into()),
            ..Secret::default()
        };
        let users = users_from_secret(&secret, "people").unwrap();
        assert_eq!(users[0].username, "alice");
        assert_eq!(users[0].groups, ["admins"]);
        assert!(users_from_secret(&Secret::default(), "people").is_err());
    }

    #[test]
    fn limits_failures_per_user_and_address_within_the_window() {
        let attempts = Attempts::default();
        let key = |u: &str, ip: &str| ("people".to_owned(), u.to_owned(), ip.to_owned());
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        for i in 0..MAX_FAILURES {
            assert!(
                attempts
                    .check(&key("alice", "10.0.0.1"), MAX_FAILURES, t0)
                    .is_ok(),
                "attempt {i}"
            );
            attempts.fail(key("alice", "10.0.0.1"), t0);
        }
        let until = attempts
            .check(&key("alice", "10.0.0.1"), MAX_FAILURES, t0)
            .unwrap_err();
        assert_eq!(until, t0 + WINDOW);
        assert!(
            attempts
                .check(&key("bob", "10.0.0.1"), MAX_FAILURES, t0)
                .is_ok(),
            "other users are not limited"
        );
        assert!(
            attempts
                .check(&key("alice", "10.0.0.2"), MAX_FAILURES, t0)
                .is_ok(),
            "other addresses are not limited"
        );
        assert!(
            attempts
                .check(&key("alice", "10.0.0.1"), MAX_FAILURES, t0 + WINDOW)
                .is_ok(),
            "failures age out"
        );
        attempts.succeed(&key("alice", "10.0.0.1"));
        assert!(
            attempts
                .check(&key("alice", "10.0.0.1"), MAX_FAILURES, t0)
                .is_ok()
        );
    }
}
