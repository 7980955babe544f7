//! Static users (a Secret's `users.yaml` with bcrypt hashes) and the limit on wrong passwords.
//! The limiter is in memory, so it counts per replica; it takes time as a parameter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// How the log names a username someone typed: the first 8 hex digits of its SHA-256. People
/// type passwords into the username box, and a typed name may carry line breaks that would forge
/// log lines; the hash keeps neither, yet still tells repeated attempts at one name apart.
pub fn log_name(typed: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, typed.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Wrong passwords allowed per (user, address) within [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// Wrong passwords allowed per user, from any address, within [`WINDOW`]: bounds guessing one
/// person's password from many addresses. Anyone can use it to lock a person out for a window;
/// that is the price of bounding the guesses.
pub const MAX_FAILURES_PER_USER: usize = 20;
/// Wrong passwords allowed per address, whatever the user, within [`WINDOW`]: bounds password
/// spraying over many names, and the bcrypt work one address can cause.
pub const MAX_FAILURES_PER_ADDRESS: usize = 50;
/// The window failures are counted over.
pub const WINDOW: SignedDuration = SignedDuration::from_secs(15 * 60);
/// Above this many counters, those with nothing recent or pending are dropped.
const MAX_COUNTERS: usize = 10_000;

/// Which of the three limits an attempt ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`MAX_FAILURES`] for this user from this address.
    UserAddress,
    /// [`MAX_FAILURES_PER_USER`] for this user from any address.
    User,
    /// [`MAX_FAILURES_PER_ADDRESS`] from this address, whatever the user.
    Address,
}

impl Limit {
    /// How many failures within [`WINDOW`] it allows.
    pub const fn max(self) -> usize {
        match self {
            Self::UserAddress => MAX_FAILURES,
            Self::User => MAX_FAILURES_PER_USER,
            Self::Address => MAX_FAILURES_PER_ADDRESS,
        }
    }
}

/// A refused attempt: the limit it ran into, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The limit reached.
    pub limit: Limit,
    /// When an attempt is allowed again.
    pub until: Timestamp,
}

/// One attempt at a password: the Connection, the name typed and the client's address key
/// (see [`super::client::address_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The static Connection.
    pub connection: String,
    /// The name typed.
    pub user: String,
    /// The client's address key.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    UserAddress(String, String, String),
    User(String, String),
    Address(String, String),
}

impl Key {
    fn all(a: &Attempt) -> [(Limit, Self); 3] {
        let c = || a.connection.clone();
        [
            (
                Limit::UserAddress,
                Self::UserAddress(c(), a.user.clone(), a.address.clone()),
            ),
            (Limit::User, Self::User(c(), a.user.clone())),
            (Limit::Address, Self::Address(c(), a.address.clone())),
        ]
    }
}

/// Failures within the window, and attempts whose bcrypt check is still running.
#[derive(Debug, Default)]
struct Counter {
    failures: Vec<Timestamp>,
    pending: usize,
}

type Counters = HashMap<Key, Counter>;

/// Counts wrong passwords per (user, address), per user and per address, and refuses further
/// attempts once a limit is reached within [`WINDOW`].
///
/// An attempt is *reserved* before its bcrypt check runs, under the same lock that checks the
/// limits, and counts against them while it runs: a burst of concurrent requests gets exactly
/// the remaining allowance through to bcrypt, however slow bcrypt is. The [`Reservation`] then
/// becomes a failure, or is released by a success. Time is a parameter; nothing here reads a
/// clock. In memory: each replica counts on its own.
#[derive(Debug, Default, Clone)]
pub struct Attempts(Arc<Mutex<Counters>>);

impl Attempts {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        match self.0.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Reserves one attempt at `now`, or refuses it when failures and attempts still running
    /// reach a limit.
    ///
    /// # Errors
    /// The first limit reached, and when to try again.
    pub fn reserve(&self, attempt: &Attempt, now: Timestamp) -> Result<Reservation, Refused> {
        let keys = Key::all(attempt);
        self.with(|map| {
            if map.len() > MAX_COUNTERS {
                map.retain(|_, c| c.pending > 0 || c.failures.iter().any(|t| *t + WINDOW > now));
            }
            for (limit, key) in &keys {
                let Some(counter) = map.get_mut(key) else {
                    continue;
                };
                counter.failures.retain(|t| *t + WINDOW > now);
                if counter.failures.len() + counter.pending >= limit.max() {
                    // Attempts still running count as failures made now; one more attempt is
                    // allowed once enough of the oldest have left the window.
                    let mut times = counter.failures.clone();
                    times.extend(std::iter::repeat_n(now, counter.pending));
                    times.sort_unstable();
                    let expiring = times.len() - limit.max();
                    let until = times.get(expiring).copied().unwrap_or(now) + WINDOW;
                    return Err(Refused {
                        limit: *limit,
                        until,
                    });
                }
            }
            for (_, key) in &keys {
                map.entry(key.clone()).or_default().pending += 1;
            }
            Ok(())
        })?;
        Ok(Reservation {
            attempts: self.clone(),
            keys: keys.map(|(_, k)| k),
            at: now,
            settled: false,
        })
    }

    /// Failures counted for `attempt`'s (user, address) at `now`.
    pub fn failures(&self, attempt: &Attempt, now: Timestamp) -> usize {
        let [(_, key), ..] = Key::all(attempt);
        self.with(|map| {
            map.get(&key).map_or(0, |c| {
                c.failures.iter().filter(|t| **t + WINDOW > now).count()
            })
        })
    }
}

/// An attempt that passed the limits and is being checked. Dropped without [`Self::succeed`]
/// (a wrong password, or a check that never finished), it counts as a failure at the instant
/// it was reserved.
#[derive(Debug)]
pub struct Reservation {
    attempts: Attempts,
    keys: [Key; 3],
    at: Timestamp,
    settled: bool,
}

impl Reservation {
    /// The password was right: the attempt is released, and the failures of this user from
    /// this address are forgotten (not those of the user elsewhere, nor of the address).
    pub fn succeed(mut self) {
        self.settled = true;
        let [user_address, ..] = &self.keys;
        self.attempts.with(|map| {
            for key in &self.keys {
                if let Some(c) = map.get_mut(key) {
                    c.pending = c.pending.saturating_sub(1);
                }
            }
            if let Some(c) = map.get_mut(user_address) {
                c.failures.clear();
            }
        });
    }

    /// The password was wrong (the same as dropping the reservation).
    pub fn fail(self) {
        drop(self);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let at = self.at;
        self.attempts.with(|map| {
            for key in &self.keys {
                let c = map.entry(key.clone()).or_default();
                c.pending = c.pending.saturating_sub(1);
                c.failures.push(at);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
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
    fn the_log_names_a_typed_user_by_a_short_hash() {
        let name = log_name("hunter2\nINFO forged");
        assert_eq!(name.len(), 8);
        assert!(name.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            log_name("alice"),
            "2bd806c9",
            "SHA-256 of alice, first 4 bytes"
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

    fn attempt(user: &str, address: &str) -> Attempt {
        Attempt {
            connection: "people".into(),
            user: user.into(),
            address: address.into(),
        }
    }

    #[test]
    fn limits_failures_per_user_and_address_within_the_window() {
        let attempts = Attempts::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        for i in 0..MAX_FAILURES {
            attempts
                .reserve(&attempt("alice", "10.0.0.1"), t0)
                .unwrap_or_else(|e| panic!("attempt {i}: {e:?}"))
                .fail();
        }
        let refused = attempts
            .reserve(&attempt("alice", "10.0.0.1"), t0)
            .unwrap_err();
        assert_eq!(
            refused,
            Refused {
                limit: Limit::UserAddress,
                until: t0 + WINDOW
            }
        );
        assert!(
            attempts.reserve(&attempt("bob", "10.0.0.1"), t0).is_ok(),
            "other users are not limited"
        );
        let elsewhere = attempts.reserve(&attempt("alice", "10.0.0.2"), t0).unwrap();
        elsewhere.succeed();
        assert!(
            attempts
                .reserve(&attempt("alice", "10.0.0.1"), t0 + WINDOW)
                .is_ok(),
            "failures age out"
        );
    }

    #[test]
    fn a_reservation_counts_until_it_is_settled() {
        let attempts = Attempts::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        // A burst: every check is still running, yet only the allowance is let through.
        let running: Vec<Reservation> = (0..MAX_FAILURES)
            .map(|_| attempts.reserve(&attempt("alice", "10.0.0.1"), t0).unwrap())
            .collect();
        assert_eq!(
            attempts
                .reserve(&attempt("alice", "10.0.0.1"), t0)
                .unwrap_err()
                .limit,
            Limit::UserAddress
        );
        assert_eq!(attempts.failures(&attempt("alice", "10.0.0.1"), t0), 0);
        let mut running = running.into_iter();
        running.next().unwrap().succeed();
        let again = attempts.reserve(&attempt("alice", "10.0.0.1"), t0).unwrap();
        drop(running);
        drop(again);
        assert_eq!(
            attempts.failures(&attempt("alice", "10.0.0.1"), t0),
            MAX_FAILURES,
            "dropped reservations are failures"
        );
    }

    #[test]
    fn a_user_is_limited_across_addresses_and_an_address_across_users() {
        let attempts = Attempts::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        for i in 0..MAX_FAILURES_PER_USER {
            let address = format!("10.0.{}.1", i / (MAX_FAILURES - 1));
            attempts
                .reserve(&attempt("alice", &address), t0)
                .unwrap()
                .fail();
        }
        assert_eq!(
            attempts
                .reserve(&attempt("alice", "10.9.9.9"), t0)
                .unwrap_err()
                .limit,
            Limit::User
        );
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            attempts
                .reserve(&attempt(&format!("user-{i}"), "10.1.1.1"), t0)
                .unwrap()
                .fail();
        }
        assert_eq!(
            attempts
                .reserve(&attempt("carol", "10.1.1.1"), t0)
                .unwrap_err()
                .limit,
            Limit::Address
        );
        // A name that looks like a wildcard is just a name.
        assert!(attempts.reserve(&attempt("*", "10.2.2.2"), t0).is_ok());
    }
}
