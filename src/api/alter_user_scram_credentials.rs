//! AlterUserScramCredentials: deletions and upsertions of SCRAM credentials. An upsertion
//! carries the salt, the iterations and the salted password (the client ran PBKDF2, as Kafka's
//! AdminClient does); the broker keeps only StoredKey and ServerKey. Each user gets one
//! result: if any of its changes is invalid, none of them is made. The valid ones are written
//! in one durable metadata update.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};

use super::{blocking, str_bytes};
use crate::auth::scram::ScramMechanism;
use crate::broker::Broker;
use crate::metadata::users::{self, Change, Users, UsersError};

/// A user's outcome: the error code and message of its first invalid change.
type Refusal = (ResponseError, String);

pub fn handle(
    broker: &Arc<Broker>,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut order: Vec<String> = Vec::new();
    let mut changes: BTreeMap<String, Result<Vec<Change>, Refusal>> = BTreeMap::new();
    let mut altered = BTreeSet::new();
    let requested = request
        .deletions
        .into_iter()
        .map(|d| (d.name.to_string(), d.mechanism, None))
        .chain(request.upsertions.into_iter().map(|u| {
            let salted = (u.iterations, u.salt.to_vec(), u.salted_password.to_vec());
            (u.name.to_string(), u.mechanism, Some(salted))
        }));
    for (user, mechanism, upsert) in requested {
        if !changes.contains_key(&user) {
            order.push(user.clone());
        }
        let change = change(&broker.users, &mut altered, &user, mechanism, upsert);
        let entry = changes.entry(user).or_insert_with(|| Ok(Vec::new()));
        match (entry.as_mut(), change) {
            (Ok(list), Ok(change)) => list.push(change),
            (Ok(_), Err(refusal)) => *entry = Err(refusal),
            (Err(_), _) => {}
        }
    }
    let valid: Vec<Change> = changes
        .values()
        .filter_map(|c| c.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let written = blocking(|| broker.users.apply(valid));
    let results = order
        .into_iter()
        .map(|user| {
            let outcome = match (&changes[&user], &written) {
                (Err(refusal), _) => Err(refusal.clone()),
                (Ok(_), Err(error)) => Err((ResponseError::UnknownServerError, error.to_string())),
                (Ok(_), Ok(())) => Ok(()),
            };
            result(user, outcome)
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// One deletion (`upsert` None) or upsertion, checked with Kafka's errors.
fn change(
    users: &Users,
    altered: &mut BTreeSet<(String, i8)>,
    user: &str,
    mechanism_code: i8,
    upsert: Option<(i32, Vec<u8>, Vec<u8>)>,
) -> Result<Change, Refusal> {
    let unacceptable = |message: String| (ResponseError::UnacceptableCredential, message);
    if user.is_empty() {
        return Err(unacceptable("Username must not be empty".into()));
    }
    let mechanism = ScramMechanism::from_kafka_type(mechanism_code).ok_or_else(|| {
        (
            ResponseError::UnsupportedSaslMechanism,
            format!("Unknown SCRAM mechanism {mechanism_code}"),
        )
    })?;
    if !altered.insert((user.to_string(), mechanism_code)) {
        return Err((
            ResponseError::DuplicateResource,
            "A user credential cannot be altered twice in the same request".into(),
        ));
    }
    let change = match upsert {
        None => Change::Delete {
            user: user.to_string(),
            mechanism,
        },
        Some((iterations, salt, salted_password)) => {
            users::check_iterations(i64::from(iterations))
                .map_err(|e| unacceptable(e.to_string()))?;
            if salt.is_empty() {
                return Err(unacceptable("The salt must not be empty".into()));
            }
            if salted_password.len() != mechanism.hash_bytes() {
                return Err(unacceptable(format!(
                    "The salted password of {} must be {} bytes",
                    mechanism.name(),
                    mechanism.hash_bytes()
                )));
            }
            Change::Upsert {
                user: user.to_string(),
                mechanism,
                credential: mechanism.credential_from_salted(
                    salt,
                    iterations as u32,
                    &salted_password,
                ),
            }
        }
    };
    users.check(&change).map_err(|error| match error {
        UsersError::NotFound { .. } => (
            ResponseError::ResourceNotFound,
            "Attempt to delete a user credential that does not exist".into(),
        ),
        other => unacceptable(other.to_string()),
    })?;
    Ok(change)
}

fn result(user: String, outcome: Result<(), Refusal>) -> AlterUserScramCredentialsResult {
    let result = AlterUserScramCredentialsResult::default().with_user(str_bytes(&user));
    match outcome {
        Ok(()) => result,
        Err((error, message)) => result
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(&message))),
    }
}
