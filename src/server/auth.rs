//! The authentication state of one connection, and the gate in front of dispatch.
//!
//! On a SASL listener a connection goes, as in Kafka: ApiVersions (optional) and SaslHandshake,
//! then SaslAuthenticate until the mechanism's exchange is done, then everything. Anything
//! else before authentication closes the connection without an answer (Kafka's "unexpected
//! Kafka request during SASL handshake"); a failed authentication or an unsupported mechanism
//! is answered, then the connection closes. Until authenticated, frames are limited to
//! `SASL_FRAME_BYTES_MAX`. On PLAINTEXT and SSL listeners every API is open, and SaslHandshake
//! and SaslAuthenticate are answered ILLEGAL_SASL_STATE, as Kafka answers them there.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::dispatch::Reply;
use crate::api::{sasl_authenticate, sasl_handshake};
use crate::auth::scram::ServerFirst;
use crate::auth::Mechanism;
use crate::broker::Broker;
use crate::limits;

/// Where a connection is in its authentication.
pub enum Stage {
    /// A listener without SASL: nothing to do.
    Open,
    /// Before SaslHandshake: ApiVersions and SaslHandshake only.
    Handshake,
    /// After SaslHandshake: SaslAuthenticate with the mechanism's first token.
    Authenticate(Mechanism),
    /// SCRAM after server-first: SaslAuthenticate with client-final.
    ScramFinal(Box<ServerFirst>),
    /// Authentication done.
    Authenticated { user: String },
    /// Authentication failed: nothing more is admitted.
    Failed,
}

pub struct Session {
    stage: Stage,
    /// Answer the current request, then close (a failed authentication).
    closing: bool,
}

impl Session {
    /// A new connection's session: `sasl` if the listener requires SASL.
    pub fn new(sasl: bool) -> Session {
        let stage = match sasl {
            true => Stage::Handshake,
            false => Stage::Open,
        };
        Session {
            stage,
            closing: false,
        }
    }

    /// Whether the connection may send a request of `api` now.
    pub fn admits(&self, api: ApiKey) -> bool {
        match self.stage {
            Stage::Open | Stage::Authenticated { .. } => true,
            Stage::Handshake => matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake),
            Stage::Authenticate(_) | Stage::ScramFinal(_) => api == ApiKey::SaslAuthenticate,
            Stage::Failed => false,
        }
    }

    /// The largest frame accepted now: small until a SASL client has authenticated.
    pub fn frame_bytes_max(&self) -> usize {
        match self.stage {
            Stage::Open | Stage::Authenticated { .. } => limits::FRAME_BYTES_MAX,
            _ => limits::SASL_FRAME_BYTES_MAX,
        }
    }

    /// Whether the connection closes once the last answer is written.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Takes the stage out (for the SASL handlers), leaving `Failed` behind: a handler that
    /// does not put a new stage back has failed the authentication.
    pub fn take_stage(&mut self) -> Stage {
        std::mem::replace(&mut self.stage, Stage::Failed)
    }

    pub fn set_stage(&mut self, stage: Stage) {
        self.stage = stage;
    }

    /// Marks the authentication failed: the current answer is the last.
    pub fn fail(&mut self) {
        self.stage = Stage::Failed;
        self.closing = true;
    }
}

/// Answers SaslHandshake and SaslAuthenticate, which need the connection's session; gives
/// every other request back, for `dispatch`.
pub async fn handle(
    broker: &Arc<Broker>,
    session: &mut Session,
    version: i16,
    body: RequestKind,
    peer: SocketAddr,
) -> Result<Reply, RequestKind> {
    let response = match body {
        RequestKind::SaslHandshake(request) => {
            ResponseKind::SaslHandshake(sasl_handshake::handle(broker, session, request))
        }
        RequestKind::SaslAuthenticate(request) => ResponseKind::SaslAuthenticate(
            sasl_authenticate::handle(broker, session, version, request, peer).await,
        ),
        other => return Err(other),
    };
    Ok(Reply::ready(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sasl_session_admits_only_the_handshake_apis_until_authenticated() {
        let mut session = Session::new(true);
        assert!(session.admits(ApiKey::ApiVersions));
        assert!(session.admits(ApiKey::SaslHandshake));
        assert!(!session.admits(ApiKey::Metadata));
        assert!(!session.admits(ApiKey::SaslAuthenticate));
        assert_eq!(session.frame_bytes_max(), limits::SASL_FRAME_BYTES_MAX);
        session.set_stage(Stage::Authenticate(Mechanism::Plain));
        assert!(session.admits(ApiKey::SaslAuthenticate));
        assert!(!session.admits(ApiKey::ApiVersions));
        assert!(!session.admits(ApiKey::Produce));
        session.set_stage(Stage::Authenticated {
            user: "alice".into(),
        });
        assert!(session.admits(ApiKey::Produce));
        assert_eq!(session.frame_bytes_max(), limits::FRAME_BYTES_MAX);
        assert!(!session.closing());
        session.fail();
        assert!(session.closing() && !session.admits(ApiKey::ApiVersions));

        let open = Session::new(false);
        assert!(open.admits(ApiKey::Produce));
        assert!(open.admits(ApiKey::SaslHandshake));
    }
}
