//! SaslAuthenticate: one token of the mechanism's exchange per request. PLAIN is one round
//! trip; SCRAM two (server-first, then server-final). A failure is answered
//! SASL_AUTHENTICATION_FAILED with a message, after which the connection closes, as in Kafka.
//! Sessions never expire (`session_lifetime_ms` 0), so clients do not re-authenticate.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};

use super::str_bytes;
use crate::auth::scram::{ScramError, ServerFirst};
use crate::auth::{plain, Mechanism};
use crate::broker::Broker;
use crate::server::auth::{Session, Stage};

/// Where an exchange stands after one token.
enum Step {
    /// SCRAM: server-first sent, client-final awaited.
    Challenge(Box<ServerFirst>, Vec<u8>),
    /// Authenticated as `user`; the last token for the client (empty for PLAIN).
    Done(String, Vec<u8>),
}

pub async fn handle(
    broker: &Arc<Broker>,
    session: &mut Session,
    _version: i16,
    request: SaslAuthenticateRequest,
    peer: SocketAddr,
) -> SaslAuthenticateResponse {
    let stage = session.take_stage();
    let mechanism = match &stage {
        Stage::Authenticate(mechanism) => *mechanism,
        Stage::ScramFinal(state) => Mechanism::Scram(state.mechanism()),
        _ => {
            session.set_stage(stage);
            return SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(str_bytes(
                    "SaslAuthenticate is not expected now (no handshake, or already authenticated)",
                )));
        }
    };
    match step(broker, stage, request.auth_bytes).await {
        Ok(Step::Challenge(state, token)) => {
            session.set_stage(Stage::ScramFinal(state));
            success(token)
        }
        Ok(Step::Done(user, token)) => {
            tracing::info!(%peer, %user, mechanism = mechanism.name(), "authenticated");
            session.set_stage(Stage::Authenticated { user });
            success(token)
        }
        Err(reason) => {
            tracing::info!(%peer, mechanism = mechanism.name(), %reason, "SASL authentication failed; closing");
            session.fail();
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(str_bytes(&reason)))
        }
    }
}

fn success(token: Vec<u8>) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token))
}

/// Runs one step of the exchange; the error is the message for the client.
async fn step(broker: &Arc<Broker>, stage: Stage, token: Bytes) -> Result<Step, String> {
    match stage {
        Stage::Authenticate(Mechanism::Plain) => authenticate_plain(broker, &token).await,
        Stage::Authenticate(Mechanism::Scram(mechanism)) => {
            let users = &broker.users;
            let (state, reply) =
                ServerFirst::start(mechanism, &token, |user| users.credential(user, mechanism))
                    .map_err(|error| scram_message(mechanism.name(), error))?;
            Ok(Step::Challenge(Box::new(state), reply))
        }
        Stage::ScramFinal(state) => {
            let name = state.mechanism().name();
            let (user, reply) = state
                .finish(&token)
                .map_err(|error| scram_message(name, error))?;
            Ok(Step::Done(user, reply))
        }
        _ => Err("SaslAuthenticate is not expected now".into()),
    }
}

/// PLAIN: the password is checked against the user's stored SCRAM credential (PBKDF2, off
/// the async executor).
async fn authenticate_plain(broker: &Arc<Broker>, token: &[u8]) -> Result<Step, String> {
    let credentials = plain::parse(token).map_err(|error| error.to_string())?;
    let users = broker.users.clone();
    let user = credentials.user.clone();
    let verified = tokio::task::spawn_blocking(move || {
        users.verify_password(&credentials.user, &credentials.password)
    })
    .await
    .unwrap_or(false);
    match verified {
        true => Ok(Step::Done(user, Vec::new())),
        false => Err(invalid_credentials("PLAIN")),
    }
}

/// Kafka's words for a wrong password or an unknown user (the same, on purpose).
fn invalid_credentials(mechanism: &str) -> String {
    format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}")
}

fn scram_message(mechanism: &str, error: ScramError) -> String {
    match error {
        ScramError::InvalidCredentials => invalid_credentials(mechanism),
        other => format!("Authentication failed: {other}"),
    }
}
