//! The Kafka listener: accepts TCP connections and runs one task per connection. Each
//! connection reads requests in order, hands them to `dispatch`, and writes the responses in
//! request order, whatever order their work finishes in.

mod connection;
pub mod dispatch;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;

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
}

/// Accepts connections until `shutdown`, each in a task tracked by `tracker`.
pub async fn serve(
    listener: TcpListener,
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
        tracker.spawn(connection::serve_connection(stream, peer, broker, shutdown));
    }
}
