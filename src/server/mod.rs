//! The Kafka listener: accepts TCP connections (within the connection limits of `admission`)
//! and runs one task per connection. Each connection reads requests in order, hands them to
//! `dispatch`, and writes the responses in request order, whatever order their work finishes
//! in, under the timeouts and the request-bytes budget of `frames`.

pub mod admission;
mod connection;
pub mod dispatch;
pub mod frames;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
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
}

/// Accepts connections until `shutdown`, each in a task tracked by `tracker`. A connection
/// over `--max-connections` or `--max-connections-per-ip` is closed at once.
pub async fn serve(
    listener: TcpListener,
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
                drop(stream);
                broker.metrics.connection_refused(refusal);
                tracing::debug!(%peer, %refusal, "connection refused");
                continue;
            }
        };
        let connection = connection::serve_connection(
            stream,
            peer,
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
