//! DescribeUserScramCredentials: each user's SCRAM mechanisms and iterations (never a salt or
//! key). A null or empty list describes every user, as in Kafka.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::str_bytes;
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let users = broker.users.list();
    let asked: Vec<String> = match request.users {
        Some(asked) if !asked.is_empty() => asked.iter().map(|u| u.name.to_string()).collect(),
        _ => users.keys().cloned().collect(),
    };
    let mut seen = BTreeSet::new();
    let repeated: BTreeSet<&String> = asked.iter().filter(|u| !seen.insert(*u)).collect();
    let mut described = BTreeSet::new();
    let mut results = Vec::with_capacity(asked.len());
    for user in &asked {
        if !described.insert(user) {
            continue;
        }
        let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(user));
        let result = if repeated.contains(user) {
            result
                .with_error_code(ResponseError::DuplicateResource.code())
                .with_error_message(Some(str_bytes(&format!(
                    "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                ))))
        } else if let Some(mechanisms) = users.get(user) {
            let infos = mechanisms
                .iter()
                .map(|(mechanism, iterations)| {
                    CredentialInfo::default()
                        .with_mechanism(mechanism.kafka_type())
                        .with_iterations(*iterations as i32)
                })
                .collect();
            result.with_credential_infos(infos)
        } else {
            result
                .with_error_code(ResponseError::ResourceNotFound.code())
                .with_error_message(Some(str_bytes(&format!(
                    "Attempt to describe a user credential that does not exist: {user}"
                ))))
        };
        results.push(result);
    }
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
