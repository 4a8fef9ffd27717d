//! The Kafka listener: accepts TCP connections (within the connection limits of `admission`;
//! with TLS on SSL and SASL_SSL listeners, see `tls`) and runs one task per connection. Each
//! connection reads requests in order, hands them to `dispatch` (after `auth` on SASL
//! listeners), and writes the responses in request order, whatever order their work finishes
//! in, under the timeouts and the request-bytes budget of `frames`.

pub mod admission;
pub mod auth;
mod connection;
pub mod dispatch;
pub mod frames;
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
use admission::Admission;
use frames::ConnectionLimits;

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
    #[error("no request for {} ms (--connections-max-idle-ms)", .0.as_millis())]
    Idle(Duration),
    #[error("a request frame took longer than {} ms to arrive (--request-read-timeout-ms)", .0.as_millis())]
    RequestReadTimeout(Duration),
    #[error("{0:?} before SASL authentication")]
    Unauthenticated(kafka_protocol::messages::ApiKey),
    #[error("SASL authentication failed")]
    AuthenticationFailed,
}

/// Accepts connections until `shutdown`, each in a task tracked by `tracker`; with `tls`, each
/// connection is a TLS server session. A connection over `--max-connections` or
/// `--max-connections-per-ip` is closed at once.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admission = Admission::new(
        broker.config.max_connections,
        broker.config.max_connections_per_ip,
    );
    let limits = Arc::new(ConnectionLimits::from_config(&broker.config));
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
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Counted first: a client that saw the close finds it counted.
                broker.metrics.connection_refused(refusal);
                drop(stream);
                tracing::debug!(%peer, %refusal, "connection refused");
                continue;
            }
        };
        let connection = serve_stream(
            stream,
            peer,
            tls.clone(),
            broker.clone(),
            shutdown.clone(),
            limits.clone(),
        );
        tracker.spawn(async move {
            connection.await;
            drop(slot);
        });
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
    limits: Arc<ConnectionLimits>,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        let (reader, writer) = stream.into_split();
        return connection::serve_connection(reader, writer, peer, broker, shutdown, limits).await;
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
            connection::serve_connection(reader, writer, peer, broker, shutdown, limits).await;
        }
        Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake failed; closing connection"),
        Err(_) => tracing::info!(%peer, "TLS handshake timed out; closing connection"),
    }
}
