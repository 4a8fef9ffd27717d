//! DeleteTopics, by name (v0-5) or by name or topic id (v6+).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::{blocking, str_bytes, topic_name};
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| (Some(name), Uuid::nil()))
            .collect()
    };
    let responses = wanted
        .into_iter()
        .map(|(name, id)| delete(broker, name, id))
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

fn delete(broker: &Broker, name: Option<TopicName>, id: Uuid) -> DeletableTopicResult {
    let result = DeletableTopicResult::default()
        .with_name(name.clone())
        .with_topic_id(id);
    let name = match name {
        Some(name) => name.0.to_string(),
        None => match broker.topics.get_by_id(&id) {
            Some(topic) => topic.name.to_string(),
            None => return result.with_error_code(ResponseError::UnknownTopicId.code()),
        },
    };
    match blocking(|| broker.topics.delete(&name)) {
        Ok(topic) => {
            tracing::info!(topic = %name, "deleted topic");
            result
                .with_name(Some(topic_name(&name)))
                .with_topic_id(topic.id)
        }
        Err(e) => result
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(&e.to_string()))),
    }
}
