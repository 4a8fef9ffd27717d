//! One client connection: a reader that decodes and dispatches requests one at a time (as
//! Kafka does, so a client's requests take effect in the order it sent them), and a writer that
//! sends the responses in that same order, awaiting deferred work (a produce waiting for its
//! fsync, a fetch waiting for data) without stopping the reader. A malformed frame, an unknown
//! api or an unsupported version closes this connection only. The stream is TCP or TLS, given
//! as its two halves; on a SASL listener `auth::Session` gates every request until the client
//! has authenticated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::auth::{self, Session};
use super::dispatch::{self, Reply};
use super::ServerError;
use crate::api::api_versions;
use crate::broker::Broker;
use crate::limits;
use crate::metrics::Metrics;
use crate::protocol::{self, encode_response};

/// A response on its way out, in request order.
struct Outgoing {
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    reply: Reply,
    /// When the request was decoded: its latency ends when its response is ready.
    started: Instant,
}

pub async fn serve_connection<R, W>(
    reader: R,
    writer: W,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (queue, outgoing) = mpsc::channel(limits::IN_FLIGHT_REQUESTS_PER_CONNECTION_MAX);
    broker.metrics.connections.inc();
    let writer = tokio::spawn(write_responses(
        writer,
        outgoing,
        peer,
        broker.metrics.clone(),
    ));
    if let Err(error) = read_requests(reader, peer, &broker, &queue, &shutdown).await {
        tracing::info!(%peer, %error, "closing connection");
    }
    drop(queue);
    let _ = writer.await;
    broker.metrics.connections.dec();
}

async fn read_requests<R: AsyncRead + Unpin>(
    reader: R,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    queue: &mpsc::Sender<Outgoing>,
    shutdown: &CancellationToken,
) -> Result<(), ServerError> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut session = Session::new(broker.config.kafka_security_protocol.sasl());
    loop {
        let frame_bytes_max = session.frame_bytes_max();
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            frame = protocol::read_frame(&mut reader, frame_bytes_max) => frame?,
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        let outgoing = handle_frame(broker, &mut session, frame, peer).await?;
        queue
            .send(outgoing)
            .await
            .map_err(|_| ServerError::WriterGone)?;
        if session.closing() {
            return Err(ServerError::AuthenticationFailed);
        }
    }
}

async fn handle_frame(
    broker: &Arc<Broker>,
    session: &mut Session,
    frame: Bytes,
    peer: SocketAddr,
) -> Result<Outgoing, ServerError> {
    let (key, version) = protocol::peek_api(&frame)?;
    let api = ApiKey::try_from(key).map_err(|_| protocol::ProtocolError::UnknownApiKey(key))?;
    if !session.admits(api) {
        return Err(ServerError::Unauthenticated(api));
    }
    let supported = dispatch::versions(api).ok_or(ServerError::NotImplemented(api))?;
    if version < supported.min || version > supported.max {
        if api == ApiKey::ApiVersions {
            // Kafka answers an ApiVersions it cannot parse at v0, with the versions it has,
            // so the client can pick one and ask again.
            let correlation_id = protocol::peek_correlation_id(&frame).unwrap_or(0);
            let reply = Reply::ready(api_versions::unsupported_version());
            return Ok(Outgoing {
                api,
                version: 0,
                correlation_id,
                reply,
                started: Instant::now(),
            });
        }
        return Err(ServerError::UnsupportedVersion {
            api,
            version,
            supported,
        });
    }
    let started = Instant::now();
    if api == ApiKey::Produce {
        broker.metrics.produce_bytes.inc_by(frame.len() as u64);
    }
    let (header, body) = protocol::decode_request(api, version, frame)?;
    let correlation_id = header.correlation_id;
    let reply = match auth::handle(broker, session, version, body, peer).await {
        Ok(reply) => reply,
        Err(body) => dispatch::dispatch(broker, header, body, peer).await?,
    };
    Ok(Outgoing {
        api,
        version,
        correlation_id,
        reply,
        started,
    })
}

async fn write_responses<W: AsyncWrite + Unpin>(
    writer: W,
    mut outgoing: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(next) = outgoing.recv().await {
        let body = match next.reply {
            Reply::Ready(body) => Some(*body),
            Reply::Deferred(work) => Some(work.await),
            Reply::None => None,
        };
        if let Some((requests, latency)) = metrics.api(next.api as i16) {
            requests.inc();
            latency.observe(next.started.elapsed().as_secs_f64());
        }
        let Some(body) = body else { continue };
        let frame = match encode_response(next.api, next.version, next.correlation_id, &body) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%peer, %error, "cannot encode a response; closing connection");
                return;
            }
        };
        if next.api == ApiKey::Fetch {
            metrics.fetch_bytes.inc_by(frame.len() as u64);
        }
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        if outgoing.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    // Flushes, then ends the stream (TLS sends close_notify), so a client refused after its
    // last answer reads that answer and then a clean close.
    let _ = writer.shutdown().await;
}
