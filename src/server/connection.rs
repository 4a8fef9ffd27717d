//! One client connection: a reader that decodes and dispatches requests one at a time (as
//! Kafka does, so a client's requests take effect in the order it sent them), and a writer that
//! sends the responses in that same order, awaiting deferred work (a produce waiting for its
//! fsync, a fetch waiting for data) without stopping the reader. A malformed frame, an unknown
//! api or an unsupported version closes this connection only; so do the limits of `frames`
//! (idle, a frame that will not finish arriving, a client that stops reading). The stream is
//! TCP or TLS, given as its two halves; on a SASL listener `auth::Session` gates every request
//! until the client has authenticated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::auth::{self, Session};
use super::dispatch::{self, DecodedRequest, Parsed, Reply};
use super::frames::{Activity, ConnectionLimits, Frame, FrameReader, ResponseWriter};
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
    /// The request's bytes in the broker-wide budget, released once the response is written.
    _permit: Option<OwnedSemaphorePermit>,
}

pub async fn serve_connection<R, W>(
    reader: R,
    writer: W,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    limits: Arc<ConnectionLimits>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (queue, outgoing) = mpsc::channel(limits::IN_FLIGHT_REQUESTS_PER_CONNECTION_MAX);
    let activity = Activity::new();
    broker.metrics.connections.inc();
    let writer = ResponseWriter::new(writer, &limits, activity.clone());
    let writer = tokio::spawn(write_responses(
        writer,
        outgoing,
        peer,
        broker.metrics.clone(),
        activity.clone(),
    ));
    let reader = FrameReader::new(reader, limits, activity);
    if let Err(error) = read_requests(reader, peer, &broker, &queue, &shutdown).await {
        broker.metrics.connection_closed(&error);
        tracing::info!(%peer, %error, "closing connection");
    }
    drop(queue);
    let _ = writer.await;
    broker.metrics.connections.dec();
}

async fn read_requests<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    queue: &mpsc::Sender<Outgoing>,
    shutdown: &CancellationToken,
) -> Result<(), ServerError> {
    let mut session = Session::new(broker.config.kafka_security_protocol.sasl());
    loop {
        let frame_bytes_max = session.frame_bytes_max();
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            frame = reader.next(frame_bytes_max) => frame?,
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
    frame: Frame,
    peer: SocketAddr,
) -> Result<Outgoing, ServerError> {
    let started = Instant::now();
    admit(session, &frame)?;
    let frame_bytes = frame.bytes.len() as u64;
    let request = match dispatch::parse_request(frame.bytes)? {
        Parsed::Request(request) => request,
        Parsed::UnsupportedApiVersions { correlation_id } => {
            return Ok(Outgoing {
                api: ApiKey::ApiVersions,
                version: 0,
                correlation_id,
                reply: Reply::ready(api_versions::unsupported_version()),
                started,
                _permit: frame.permit,
            });
        }
    };
    let DecodedRequest {
        api,
        version,
        header,
        body,
    } = *request;
    if api == ApiKey::Produce {
        broker.metrics.produce_bytes.inc_by(frame_bytes);
    }
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
        _permit: frame.permit,
    })
}

/// Refuses, before anything is decoded, a request the session does not admit yet (anything
/// but the SASL exchange before authentication). Unknown api keys are left to the decoder.
fn admit(session: &Session, frame: &Frame) -> Result<(), ServerError> {
    let (key, _) = protocol::peek_api(&frame.bytes)?;
    match ApiKey::try_from(key) {
        Ok(api) if !session.admits(api) => Err(ServerError::Unauthenticated(api)),
        _ => Ok(()),
    }
}

async fn write_responses<W: AsyncWrite + Unpin>(
    mut writer: ResponseWriter<W>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    activity: Arc<Activity>,
) {
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
        let Some(body) = body else {
            activity.request_answered();
            continue;
        };
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
        let written = match writer.write(&frame).await {
            Ok(()) if outgoing.is_empty() => writer.flush().await,
            written => written,
        };
        if let Err(error) = written {
            // A client that left is no news; one that stopped reading is.
            if error.kind() == std::io::ErrorKind::TimedOut {
                metrics.timed_out_response_write.inc();
                tracing::info!(%peer, %error, "closing connection");
            }
            return;
        }
        activity.request_answered();
    }
    // Flushes, then ends the stream (TLS sends close_notify), so a client refused after its
    // last answer reads that answer and then a clean close.
    let _ = writer.shutdown().await;
}
