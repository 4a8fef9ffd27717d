//! InitProducerId for idempotent producers: a producer id never handed out before (not even
//! before a restart), or an epoch bump for a producer that asks to keep its id (KIP-360).
//! Transactional ids are refused: transactions are not implemented.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::blocking;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty())
    {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let (id, epoch) = (request.producer_id.0, request.producer_epoch);
    if id >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        return response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch + 1);
    }
    match blocking(|| broker.metadata.next_producer_id()) {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::error!(%error, "cannot reserve producer ids");
            response.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
