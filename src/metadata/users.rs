//! The users of the Kafka listener: per user and SCRAM mechanism, one credential (salt,
//! iterations, StoredKey, ServerKey: Kafka's own form). No password is stored, in any form
//! that logs a client in: SCRAM checks proofs against StoredKey, and PLAIN derives the key from
//! the password it is given and compares (`ScramCredential::verify_password`).
//!
//! The credentials are part of the metadata document, so they share its durability (atomic
//! replace and fsync) and its bucket snapshot: a broker restored from the bucket keeps its
//! users. Changes come from the admin API and from AlterUserScramCredentials.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Metadata, MetadataError};
use crate::auth::scram::{ScramCredential, ScramMechanism};
use crate::limits;

/// One user's credentials, by mechanism.
pub type UserCredentials = BTreeMap<ScramMechanism, ScramCredential>;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("the user name must not be empty")]
    EmptyName,
    #[error(
        "the user name is longer than {} bytes",
        limits::SASL_USER_NAME_BYTES_MAX
    )]
    NameTooLong,
    #[error(
        "iterations must be between {} and {} (got {got})",
        limits::SCRAM_ITERATIONS_MIN,
        limits::SCRAM_ITERATIONS_MAX
    )]
    Iterations { got: i64 },
    #[error("user {user} has no {} credential", mechanism.name())]
    NotFound {
        user: String,
        mechanism: ScramMechanism,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// One change of AlterUserScramCredentials or the admin API.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    Delete {
        user: String,
        mechanism: ScramMechanism,
    },
}

/// The user store: a view of the metadata document.
#[derive(Clone)]
pub struct Users {
    metadata: Arc<Metadata>,
}

impl Users {
    pub fn new(metadata: Arc<Metadata>) -> Users {
        Users { metadata }
    }

    /// Every user with the iterations of each of its mechanisms, by name.
    pub fn list(&self) -> BTreeMap<String, BTreeMap<ScramMechanism, u32>> {
        let doc = self.metadata.lock_doc();
        doc.users
            .iter()
            .map(|(user, credentials)| {
                let iterations = credentials
                    .iter()
                    .map(|(mechanism, credential)| (*mechanism, credential.iterations))
                    .collect();
                (user.clone(), iterations)
            })
            .collect()
    }

    pub fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        let doc = self.metadata.lock_doc();
        doc.users.get(user)?.get(&mechanism).cloned()
    }

    /// Whether `password` is `user`'s, checked against the strongest mechanism it has.
    /// CPU-heavy (PBKDF2): call it off the async executor.
    pub fn verify_password(&self, user: &str, password: &str) -> bool {
        let strongest = {
            let doc = self.metadata.lock_doc();
            doc.users
                .get(user)
                .and_then(|c| c.iter().next_back().map(|(m, c)| (*m, c.clone())))
        };
        match strongest {
            Some((mechanism, credential)) => credential.verify_password(mechanism, password),
            None => {
                // The same work for an unknown user, so the time taken does not tell.
                let mechanism = ScramMechanism::Sha512;
                let stand_in = mechanism.credential_from_salted(
                    vec![0; limits::SCRAM_SALT_BYTES],
                    limits::SCRAM_ITERATIONS_DEFAULT,
                    &[0; 64],
                );
                stand_in.verify_password(mechanism, password);
                false
            }
        }
    }

    /// Applies every change in one durable write; a failed write changes nothing. Callers
    /// check each change first (`check`), so that Kafka's per-user errors come before it.
    /// Deleting the last mechanism of a user removes the user.
    pub fn apply(&self, changes: Vec<Change>) -> Result<(), UsersError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.metadata.update(|doc| {
            for change in changes {
                match change {
                    Change::Upsert {
                        user,
                        mechanism,
                        credential,
                    } => {
                        doc.users
                            .entry(user)
                            .or_default()
                            .insert(mechanism, credential);
                    }
                    Change::Delete { user, mechanism } => {
                        let Some(credentials) = doc.users.get_mut(&user) else {
                            continue;
                        };
                        credentials.remove(&mechanism);
                        if credentials.is_empty() {
                            doc.users.remove(&user);
                        }
                    }
                }
            }
        })?;
        Ok(())
    }

    /// Whether a change may be made: a valid name and iterations for an upsert, an existing
    /// credential for a deletion.
    pub fn check(&self, change: &Change) -> Result<(), UsersError> {
        match change {
            Change::Upsert {
                user, credential, ..
            } => {
                check_name(user)?;
                check_iterations(i64::from(credential.iterations))
            }
            Change::Delete { user, mechanism } => match self.credential(user, *mechanism) {
                Some(_) => Ok(()),
                None => Err(UsersError::NotFound {
                    user: user.clone(),
                    mechanism: *mechanism,
                }),
            },
        }
    }
}

pub fn check_name(user: &str) -> Result<(), UsersError> {
    if user.is_empty() {
        return Err(UsersError::EmptyName);
    }
    if user.len() > limits::SASL_USER_NAME_BYTES_MAX {
        return Err(UsersError::NameTooLong);
    }
    Ok(())
}

pub fn check_iterations(iterations: i64) -> Result<(), UsersError> {
    let allowed = i64::from(limits::SCRAM_ITERATIONS_MIN)..=i64::from(limits::SCRAM_ITERATIONS_MAX);
    if !allowed.contains(&iterations) {
        return Err(UsersError::Iterations { got: iterations });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(user: &str, mechanism: ScramMechanism, password: &str) -> Change {
        Change::Upsert {
            user: user.into(),
            mechanism,
            credential: mechanism.new_credential(password, 4096).unwrap(),
        }
    }

    #[test]
    fn users_are_durable_across_reopen_and_hold_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::new(Arc::new(Metadata::open(dir.path()).unwrap()));
        users
            .apply(vec![
                upsert("alice", ScramMechanism::Sha512, "alice-secret"),
                upsert("alice", ScramMechanism::Sha256, "alice-secret"),
                upsert("bob", ScramMechanism::Sha256, "bob-secret"),
            ])
            .unwrap();
        drop(users);
        let file = std::fs::read_to_string(dir.path().join("metadata.json")).unwrap();
        assert!(!file.contains("alice-secret"), "{file}");
        assert!(file.contains("SCRAM-SHA-512"), "{file}");

        let users = Users::new(Arc::new(Metadata::open(dir.path()).unwrap()));
        let listed = users.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed["alice"].len(), 2);
        assert!(users.verify_password("alice", "alice-secret"));
        assert!(!users.verify_password("alice", "bob-secret"));
        assert!(!users.verify_password("carol", "anything"));
        assert!(users.credential("bob", ScramMechanism::Sha512).is_none());

        let delete = |user: &str, mechanism| Change::Delete {
            user: user.into(),
            mechanism,
        };
        assert!(matches!(
            users.check(&delete("bob", ScramMechanism::Sha512)),
            Err(UsersError::NotFound { .. })
        ));
        users
            .apply(vec![delete("bob", ScramMechanism::Sha256)])
            .unwrap();
        assert!(
            !users.list().contains_key("bob"),
            "the last mechanism removes the user"
        );
    }

    #[test]
    fn names_and_iterations_are_checked() {
        assert!(matches!(check_name(""), Err(UsersError::EmptyName)));
        assert!(check_name(&"x".repeat(limits::SASL_USER_NAME_BYTES_MAX)).is_ok());
        assert!(check_name(&"x".repeat(limits::SASL_USER_NAME_BYTES_MAX + 1)).is_err());
        assert!(check_iterations(4095).is_err());
        assert!(check_iterations(4096).is_ok());
        assert!(check_iterations(16_384).is_ok());
        assert!(check_iterations(16_385).is_err());
    }
}
