//! The Kafka listener: accepts TCP connections (with TLS on SSL and SASL_SSL listeners, see
//! `tls`) and runs one task per connection. Each connection reads requests in order, hands
//! them to `dispatch` (after `auth` on SASL listeners), and writes the responses in request
//! order, whatever order their work finishes in.

pub mod auth;
mod connection;
pub mod dispatch;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::limits;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Protocol(#[from] crate::protocol::ProtocolError),
    #[error("api {0:?} is not implemented by this broker")]
    NotImplemented(kafka_protocol::messages::ApiKey),
    #[error("api {api:?} v{version} is not supported (supported: {supported})")]
    UnsupportedVersion {
        api: kafka_protocol::messages::ApiKey,
        version: i16,
        supported: kafka_protocol::protocol::VersionRange,
    },
    #[error("the connection's response writer stopped")]
    WriterGone,
    #[error("{0:?} before SASL authentication")]
    Unauthenticated(kafka_protocol::messages::ApiKey),
    #[error("SASL authentication failed")]
    AuthenticationFailed,
}

/// Accepts connections until `shutdown`, each in a task tracked by `tracker`; with `tls`, each
/// connection is a TLS server session.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(serve_stream(stream, peer, tls.clone(), broker, shutdown));
    }
}

/// Serves one accepted connection, after its TLS handshake on a TLS listener. A failed or
/// slow handshake (a plaintext client on a TLS port, say) closes this connection only.
async fn serve_stream(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        let (reader, writer) = stream.into_split();
        return connection::serve_connection(reader, writer, peer, broker, shutdown).await;
    };
    let handshake = tokio::time::timeout(
        Duration::from_millis(limits::TLS_HANDSHAKE_TIMEOUT_MS),
        tls.accept(stream),
    );
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return,
        accepted = handshake => accepted,
    };
    match accepted {
        Ok(Ok(stream)) => {
            let (reader, writer) = tokio::io::split(stream);
            connection::serve_connection(reader, writer, peer, broker, shutdown).await;
        }
        Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake failed; closing connection"),
        Err(_) => tracing::info!(%peer, "TLS handshake timed out; closing connection"),
    }
}
