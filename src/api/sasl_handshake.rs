//! SaslHandshake: the client names its SASL mechanism; the answer lists the enabled ones.
//! Only v1 is served: after v0 a client sends raw SASL tokens outside Kafka's framing, and
//! every current client (librdkafka, kafka-python, Java) uses v1 and SaslAuthenticate.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::str_bytes;
use crate::auth::Mechanism;
use crate::broker::Broker;
use crate::server::auth::{Session, Stage};

pub fn handle(
    broker: &Broker,
    session: &mut Session,
    request: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let enabled = &broker.config.sasl_enabled_mechanisms;
    let response =
        SaslHandshakeResponse::default().with_mechanisms(enabled.names().map(str_bytes).collect());
    match session.take_stage() {
        Stage::Handshake => {}
        other => {
            // A listener without SASL, or a second handshake: Kafka's answer, nothing changes.
            session.set_stage(other);
            return response.with_error_code(ResponseError::IllegalSaslState.code());
        }
    }
    let chosen = Mechanism::from_name(&request.mechanism).filter(|m| enabled.contains(*m));
    let Some(mechanism) = chosen else {
        tracing::info!(mechanism = %request.mechanism.as_str(), "SASL mechanism not enabled; closing");
        session.fail();
        return response.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
    };
    session.set_stage(Stage::Authenticate(mechanism));
    response
}
