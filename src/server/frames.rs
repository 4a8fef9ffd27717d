//! Request frames in and responses out, under the limits that keep a slow, idle or hostile
//! client from holding the broker's memory or tasks forever:
//!
//! - the idle timeout between requests (Kafka's `connections.max.idle.ms`): a connection with
//!   nothing in flight and no traffic for that long is closed;
//! - the request read timeout: a frame must arrive whole within a bound of its first byte, so
//!   a client that trickles one byte a second (slowloris) is cut off;
//! - the response write timeout: a write that makes no progress for a bound (the client stopped
//!   reading) closes the connection;
//! - the broker-wide budget of request bytes read and not yet answered (Kafka's
//!   `queued.max.request.bytes`): a frame's claimed size is reserved before its body is read and
//!   released once its response is written, so connections wait (backpressure) rather than
//!   take memory past the budget.
//!
//! The connection task owns the sockets and the request order; this module owns the waits.
//! Both halves are generic over the stream, so a TLS stream fits the same way.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

use super::ServerError;
use crate::config::Config;
use crate::protocol;

/// Bytes of each connection's read and write buffers.
const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

/// The limits every connection runs under, from the settings. One per listener: the budget of
/// request bytes is shared by all its connections.
pub struct ConnectionLimits {
    pub idle: Duration,
    pub request_read: Duration,
    pub response_write: Duration,
    /// The budget of request bytes read and not yet answered, and its size; `None`: no budget.
    request_bytes: Option<(Arc<Semaphore>, usize)>,
}

impl ConnectionLimits {
    pub fn from_config(config: &Config) -> ConnectionLimits {
        let budget = usize::try_from(config.queued_max_request_bytes).unwrap_or(usize::MAX);
        let budget = budget.min(Semaphore::MAX_PERMITS);
        ConnectionLimits {
            idle: Duration::from_millis(config.connections_max_idle_ms),
            request_read: Duration::from_millis(config.request_read_timeout_ms),
            response_write: Duration::from_millis(config.response_write_timeout_ms),
            request_bytes: (budget > 0).then(|| (Arc::new(Semaphore::new(budget)), budget)),
        }
    }

    /// Takes `size` bytes of the budget (all of it for a frame larger than the budget), waiting
    /// while other requests hold it.
    async fn reserve(&self, size: usize) -> Option<OwnedSemaphorePermit> {
        let (budget, budget_bytes) = self.request_bytes.as_ref()?;
        // A frame is at most FRAME_BYTES_MAX (100 MiB), which fits a u32.
        let wanted = u32::try_from(size.min(*budget_bytes)).unwrap_or(u32::MAX);
        budget.clone().acquire_many_owned(wanted).await.ok()
    }
}

/// What the reader and the writer of one connection tell each other: requests in flight (a
/// connection waiting for its responses is not idle) and when it last moved a byte.
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    /// Nothing in flight and no traffic for `idle`.
    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.last().elapsed() >= idle
    }

    fn request_read(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    /// A response was written (or a request needed none).
    pub fn request_answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.touch();
    }
}

/// A request frame and its share of the broker-wide budget, held until its response is written.
pub struct Frame {
    pub bytes: Bytes,
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Reads request frames from one connection.
pub struct FrameReader<R> {
    reader: BufReader<R>,
    limits: Arc<ConnectionLimits>,
    activity: Arc<Activity>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, limits: Arc<ConnectionLimits>, activity: Arc<Activity>) -> Self {
        FrameReader {
            reader: BufReader::with_capacity(SOCKET_BUFFER_BYTES, reader),
            limits,
            activity,
        }
    }

    /// The next frame, of at most `frame_bytes_max`; `Ok(None)` when the peer closed the
    /// connection between frames.
    pub async fn next(&mut self, frame_bytes_max: usize) -> Result<Option<Frame>, ServerError> {
        if !self.wait_for_request().await? {
            return Ok(None);
        }
        let request_read = self.limits.request_read;
        let started = Instant::now();
        let size = timeout_at(
            started + request_read,
            protocol::read_frame_size(&mut self.reader, frame_bytes_max),
        )
        .await
        .map_err(|_| ServerError::RequestReadTimeout(request_read))??;
        let Some(size) = size else {
            return Ok(None);
        };
        let waiting = Instant::now();
        let permit = self.limits.reserve(size).await;
        // Waiting for the budget is the broker's doing, not the client's: it does not count.
        let deadline = started + request_read + waiting.elapsed();
        let bytes = timeout_at(deadline, protocol::read_frame_body(&mut self.reader, size))
            .await
            .map_err(|_| ServerError::RequestReadTimeout(request_read))??;
        self.activity.request_read();
        Ok(Some(Frame { bytes, permit }))
    }

    /// Waits for the first byte of the next frame; `false` if the peer closed instead. Past the
    /// idle timeout with nothing in flight, the connection is idle.
    async fn wait_for_request(&mut self) -> Result<bool, ServerError> {
        let idle = self.limits.idle;
        loop {
            // While responses are pending the clock starts now: the client is waiting for us.
            let quiet_since = match self.activity.in_flight.load(Ordering::Acquire) {
                0 => self.activity.last(),
                _ => Instant::now(),
            };
            let filled = timeout_at(quiet_since + idle, self.reader.fill_buf())
                .await
                .map(|filled| filled.map(|bytes| !bytes.is_empty()));
            match filled {
                Ok(more) => return Ok(more.map_err(protocol::ProtocolError::Io)?),
                Err(_) if self.activity.is_idle(idle) => return Err(ServerError::Idle(idle)),
                Err(_) => continue,
            }
        }
    }
}

/// Writes response frames to one connection; a write that makes no progress within the
/// response write timeout fails with `TimedOut`.
pub struct ResponseWriter<W> {
    writer: BufWriter<W>,
    stall: Duration,
    activity: Arc<Activity>,
}

impl<W: AsyncWrite + Unpin> ResponseWriter<W> {
    pub fn new(writer: W, limits: &ConnectionLimits, activity: Arc<Activity>) -> Self {
        ResponseWriter {
            writer: BufWriter::with_capacity(SOCKET_BUFFER_BYTES, writer),
            stall: limits.response_write,
            activity,
        }
    }

    /// Writes all of `bytes` (into the buffer, or through it to the socket). Each step may take
    /// up to the timeout; a large response to a slow reader is fine as long as it moves.
    pub async fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let written = timeout(self.stall, self.writer.write(bytes))
                .await
                .map_err(|_| self.stalled())??;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[written..];
            self.activity.touch();
        }
        Ok(())
    }

    /// Sends what is buffered (at most the buffer's size, so one timeout bounds it).
    pub async fn flush(&mut self) -> io::Result<()> {
        timeout(self.stall, self.writer.flush())
            .await
            .map_err(|_| self.stalled())??;
        self.activity.touch();
        Ok(())
    }

    /// Flushes, then ends the stream (a TLS stream sends close_notify), within the timeout.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        timeout(self.stall, self.writer.shutdown())
            .await
            .map_err(|_| self.stalled())?
    }

    fn stalled(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client read no response bytes for {} ms (--response-write-timeout-ms)",
                self.stall.as_millis()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits;
    use tokio::io::AsyncWriteExt;

    fn limits(idle_ms: u64, read_ms: u64, write_ms: u64, budget: u64) -> Arc<ConnectionLimits> {
        let mut config = crate::config::Config::load(vec!["strata".into(), "serve".into()])
            .expect("default settings");
        config.connections_max_idle_ms = idle_ms;
        config.request_read_timeout_ms = read_ms;
        config.response_write_timeout_ms = write_ms;
        config.queued_max_request_bytes = budget;
        Arc::new(ConnectionLimits::from_config(&config))
    }

    fn frame(body_bytes: usize) -> Vec<u8> {
        let mut frame = (body_bytes as i32).to_be_bytes().to_vec();
        frame.resize(4 + body_bytes, 7);
        frame
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_idle_only_with_nothing_in_flight() {
        let (client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut reader =
            FrameReader::new(server, limits(1_000, 60_000, 60_000, 0), activity.clone());
        activity.request_read();
        let waited = Instant::now();
        let task = tokio::spawn(async move {
            let result = reader.next(limits::FRAME_BYTES_MAX).await.map(|_| ());
            (result, waited.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(5_000)).await;
        assert!(!task.is_finished(), "idle while a response was pending");
        activity.request_answered();
        let (result, after) = task.await.unwrap();
        assert!(matches!(result, Err(ServerError::Idle(_))), "{result:?}");
        assert!(after >= Duration::from_millis(6_000), "{after:?}");
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_trickles_in_is_cut_off_at_the_read_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader =
            FrameReader::new(server, limits(600_000, 3_000, 60_000, 0), Activity::new());
        let task = tokio::spawn(async move {
            reader
                .next(limits::FRAME_BYTES_MAX)
                .await
                .map(|f| f.is_some())
        });
        for byte in frame(100) {
            if client.write_all(&[byte]).await.is_err() || task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(ServerError::RequestReadTimeout(_))),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn frames_wait_for_the_budget_and_release_it_when_dropped() {
        let limits = limits(600_000, 60_000, 60_000, 1_000);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(server, limits.clone(), Activity::new());
        client.write_all(&frame(600)).await.unwrap();
        client.write_all(&frame(600)).await.unwrap();
        let first = reader.next(limits::FRAME_BYTES_MAX).await.unwrap().unwrap();
        assert_eq!(first.bytes.len(), 600);
        let second = tokio::spawn(async move {
            reader
                .next(limits::FRAME_BYTES_MAX)
                .await
                .map(|f| f.map(|f| f.bytes.len()))
        });
        tokio::time::sleep(Duration::from_millis(100_000)).await;
        assert!(!second.is_finished(), "read past the budget");
        drop(first);
        assert_eq!(second.await.unwrap().unwrap(), Some(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_write_timeout() {
        let (client, server) = tokio::io::duplex(1024);
        let limits = limits(600_000, 60_000, 2_000, 0);
        let mut writer = ResponseWriter::new(server, &limits, Activity::new());
        let result = writer.write(&vec![1u8; 256 * 1024]).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(client);
    }
}
