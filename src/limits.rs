//! Every bound in one place. A number that limits memory, queues or loops over client input
//! lives here, with the reason it has the value it has.

/// Largest request frame accepted from a client, as Kafka's `socket.request.max.bytes`.
/// The length prefix is checked against this before any buffer is allocated.
pub const FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;

/// Memory the decoded arrays of one request may take, each element counted at its in-memory
/// size (the vendored kafka-protocol's element budget). An element can be far larger decoded
/// than on the wire: Metadata v1 with empty topic names decodes to 54 times its frame, so a
/// 100 MiB frame would take 5 GiB. Real requests decode to a few times their size; 64 MiB
/// holds an OffsetCommit of some 800,000 partitions.
pub const DECODED_ARRAYS_BYTES_MAX: usize = 64 * 1024 * 1024;

/// First allocation for a frame body, and the size its buffer starts doubling from as bytes
/// arrive: a peer that claims a large frame and then stalls holds this much, not its claim.
/// As large as the connection's read buffer, so a typical request takes one allocation.
pub const FRAME_READ_CHUNK_BYTES: usize = 64 * 1024;

/// Default of `--max-connections` (Kafka's `max.connections`, unbounded there). An idle
/// connection holds ~130 KiB of socket buffers and a file descriptor: 4096 of them stay under
/// ~0.5 GiB and under the usual `nofile` limit of 65536 with room for the WAL and the cache.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;

/// Default of `--connections-max-idle-ms`: Kafka's `connections.max.idle.ms` (10 minutes).
pub const CONNECTIONS_IDLE_MS_DEFAULT: u64 = 600_000;

/// Default of `--request-read-timeout-ms`: the longest a request frame may take to arrive from
/// its first byte to its last. Twice a Java client's `request.timeout.ms` (30 s) and
/// librdkafka's `socket.timeout.ms` (60 s): past it the client has given up on the request
/// anyway, so only a client that trickles bytes on purpose (slowloris) is cut off.
pub const REQUEST_READ_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// Default of `--response-write-timeout-ms`: a response write that makes no progress this long
/// (the client stopped reading) closes the connection. Same reasoning as the read timeout: a
/// client that reads nothing for a minute has timed its requests out.
pub const RESPONSE_WRITE_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// Default of `--queued-max-request-bytes` (Kafka's `queued.max.request.bytes`): 0, no
/// broker-wide budget, as Kafka's default (-1). The budget reserves a frame's claimed size
/// before its body arrives (so big frames queue instead of piling up), which also lets six
/// clients that claim 100 MiB and send nothing hold a 512 MiB budget until the request read
/// timeout, stalling everyone else. Without it a frame costs only the bytes that have arrived
/// (see `FRAME_READ_CHUNK_BYTES`), so memory follows real traffic, not claims.
pub const QUEUED_REQUEST_BYTES_DEFAULT: u64 = 0;

/// Requests read from one connection whose responses have not been written yet. Kafka clients
/// pipeline up to 5 by default; beyond this the connection stops reading (backpressure).
pub const IN_FLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 32;

/// Kafka's default `message.max.bytes` / `max.message.bytes`: the largest record batch.
pub const MESSAGE_BYTES_DEFAULT: i32 = 1_048_588;

/// Append requests waiting for the WAL writer. Producers wait (backpressure) past this.
pub const WAL_QUEUE_DEPTH: usize = 4096;

/// Bytes one group commit writes before it syncs, so one fsync never waits on an unbounded pile.
pub const WAL_GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Largest WAL entry replay accepts: a batch plus its framing. Anything longer is a torn tail.
pub const WAL_ENTRY_BYTES_MAX: usize = FRAME_BYTES_MAX;

/// How often the WAL writer checks whether the active segment is old enough to roll.
pub const WAL_TICK_MS: u64 = 250;

/// A deleted WAL segment's blocks are freed this many bytes at a time, with a pause between
/// steps: freeing a whole segment at once holds the file system's journal for tens of
/// milliseconds, and every WAL fsync meanwhile waits (measured: 40 ms per 128 MiB segment,
/// WAL fsyncs of 12-30 ms beside it).
pub const WAL_RELEASE_STEP_BYTES: u64 = 8 * 1024 * 1024;

/// The pause between two such steps, in which the WAL's fsyncs get through.
pub const WAL_RELEASE_PAUSE_MS: u64 = 2;

/// Longest a deleted WAL segment waits for the reads that still hold its file before its blocks
/// are freed step by step (past it, they are freed all at once when the last read ends).
pub const WAL_RELEASE_WAIT_MS: u64 = 1000;

/// Longest topic name, as Kafka (249, so that `<topic>-<partition>` fits a file name).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Most partitions one topic may have on this single broker.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Batches per producer and partition whose sequence numbers are remembered for de-duplication.
/// Kafka keeps 5, matching `max.in.flight.requests.per.connection` for idempotent producers.
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// Producer ids handed out from one durable reservation; a restart skips the rest of the block,
/// so an id is never handed out twice.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Longest a fetch may wait for `min_bytes`, whatever the client asks.
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;

/// Times a fetch plans again because the indexer deleted a WAL segment under it.
pub const FETCH_REPLANS_MAX: u32 = 3;

/// Largest response a single fetch builds, whatever the client asks (Kafka's `fetch.max.bytes`).
pub const FETCH_RESPONSE_BYTES_MAX: usize = 55 * 1024 * 1024;

/// Longest a produce waits for its append to become durable when the client asks for longer.
pub const PRODUCE_TIMEOUT_MS_MAX: u64 = 120_000;

/// Default of `--search-lag-bytes-max`: WAL bytes the hot search index may fall behind before
/// produce requests are held. A quarter of the default WAL disk budget: a burst of that size
/// goes in at the WAL's full speed, as a Kafka producer expects, and search catches up after
/// it (at ~40-200 MB/s of indexing on 2 cores, within a few minutes at worst); produce above
/// the indexing rate for longer is held to it, with the WAL flat at about twice this size (the
/// lag, and segments indexed but not yet uploaded: measured 7-8.4 GB at full speed).
pub const SEARCH_LAG_BYTES_DEFAULT: u64 = 4 * 1024 * 1024 * 1024;

/// Longest a produce request is held while the hot search index catches up with the WAL
/// (`--search-lag-bytes-max`); then it goes ahead, so a stalled index never stops produce.
pub const PRODUCE_PACE_WAIT_MS_MAX: u64 = 5_000;

/// How long shutdown waits for in-flight requests before it stops waiting.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;

/// Largest decompressed records section the indexer accepts from one batch. A producer's batch
/// is at most `max.message.bytes` compressed; this stops a compression bomb from taking the
/// broker's memory with it.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Target size of one data block in a segment object: the unit of a cold read and of the cache.
pub const SEGMENT_BLOCK_BYTES: usize = 1024 * 1024;

/// Bytes of a staged object written before the indexer asks the kernel to write them out (and
/// waits for the step before): the object reaches the disk in steps this size, so a WAL fsync
/// never waits behind a whole one.
pub const STAGING_WRITEBACK_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes read from an object's end to find its footer; a larger footer takes a second read.
pub const SEGMENT_TAIL_READ_BYTES: usize = 64 * 1024;

/// Largest footer a reader accepts.
pub const SEGMENT_FOOTER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Objects above this size are uploaded in parts (multipart upload).
pub const MULTIPART_THRESHOLD_BYTES: usize = 16 * 1024 * 1024;

/// Part size of a multipart upload (S3's minimum is 5 MiB).
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// Default bound on one object-store request (a PUT of an object or of one multipart part, a
/// ranged GET, a LIST page, a DELETE): S3 answers in milliseconds and moves a multipart part
/// (8 MiB) in well under a second, so 30 s only cuts a request that is stuck. The S3 client's own
/// timeouts do not cover a stalled local disk or a connection that stops mid-body; this bound
/// covers every store (`--object-store-timeout-ms`).
pub const OBJECT_STORE_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// First and largest wait between retries of a failed indexer step.
pub const INDEXER_BACKOFF_MIN_MS: u64 = 200;
pub const INDEXER_BACKOFF_MAX_MS: u64 = 30_000;

/// How often the indexer looks for sealed segments even if nothing woke it.
pub const INDEXER_POLL_MS: u64 = 5_000;

/// How often the metadata snapshot upload is retried or re-checked (changes wake it at once).
pub const METADATA_SNAPSHOT_MS: u64 = 5_000;

/// Producer ids a broker restored from a snapshot skips, beyond the snapshot's reservation:
/// the lost broker may have reserved more blocks after its last snapshot.
pub const PRODUCER_ID_RESTORE_MARGIN: i64 = 1_000_000;

/// Nice value of the threads that index records (the indexer and the hot search index): on a
/// machine short of CPU, the WAL writer and the connections go first, so produce latency is the
/// disk's and indexing takes what is left (it has the WAL's disk budget to catch up in).
pub const BACKGROUND_NICE: i32 = 10;

/// How long the indexer waits for the hot search index to cover a sealed segment (a refresh
/// pass that began after the seal) before it indexes the records itself. Packing the hot index
/// saves indexing every record twice; the wait is normally one pass, and the WAL's disk budget
/// absorbs it when the refresher is behind.
pub const INDEXER_HOT_INDEX_WAIT_MS: u64 = 30_000;

/// Memory the Tantivy writer of one segment object may use while indexing (one thread).
pub const INDEX_WRITER_BYTES: usize = 32 * 1024 * 1024;

/// How often the group coordinator checks session timeouts and rebalance deadlines.
pub const GROUP_TICK_MS: u64 = 100;

/// Session timeouts a JoinGroup may ask for: Kafka's `group.min.session.timeout.ms` and
/// `group.max.session.timeout.ms` defaults.
pub const GROUP_SESSION_TIMEOUT_MIN_MS: i32 = 6_000;
pub const GROUP_SESSION_TIMEOUT_MAX_MS: i32 = 1_800_000;

/// Longest metadata string an OffsetCommit may store, as Kafka's `offset.metadata.max.bytes`.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// Longest an OffsetCommit waits for its offsets to become durable before it answers
/// REQUEST_TIMED_OUT: Kafka's `offsets.commit.timeout.ms` default.
pub const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// The committed-offsets log is rewritten as its live state once it grows past this.
pub const OFFSETS_LOG_COMPACT_BYTES: u64 = 16 * 1024 * 1024;

/// Largest entry replay of the committed-offsets log accepts; anything longer is a torn tail.
pub const OFFSETS_ENTRY_BYTES_MAX: usize = FRAME_BYTES_MAX;

/// Offset commits written with one fsync, at most.
pub const OFFSETS_GROUP_COMMIT_MAX: usize = 1024;

/// Hits a search returns unless asked otherwise, and the most it returns: every index searched
/// keeps this many candidates, so this bounds a search's memory (a larger `limit` is a 400,
/// never a silent cut).
pub const SEARCH_HITS_DEFAULT: usize = 10;
pub const SEARCH_HITS_MAX: usize = 1000;

/// Object indexes kept open for search (each holds little: the files are read through the
/// block cache).
pub const SEARCH_OPEN_INDEXES_MAX: u64 = 1024;

/// Unit of a read of an object's index files: index reads are cached like data blocks.
pub const SEARCH_INDEX_CHUNK_BYTES: u64 = 1024 * 1024;

/// Memory of the hot index's writer (Tantivy's minimum is 15 MB); one writer is open at a
/// time, for the active WAL segment (two briefly around a roll).
pub const SEARCH_HOT_WRITER_BYTES: usize = 16 * 1024 * 1024;

/// WAL bytes the hot-index refresher reads at once.
pub const SEARCH_HOT_READ_BYTES: usize = 8 * 1024 * 1024;

/// How often a fault-injection `hang` checks whether its fault was cleared (tests only).
pub const FAULT_HANG_POLL_MS: u64 = 10;

/// Largest JSON body the admin API accepts (a search or a topic change is small).
pub const ADMIN_BODY_BYTES_MAX: usize = 1024 * 1024;

/// Longest a TLS handshake on the Kafka listener may take: a client that connects and says
/// nothing (or speaks plaintext slowly) must not hold a task and a socket forever.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Largest frame a client may send on a SASL listener before it has authenticated, as Kafka's
/// `sasl.server.max.receive.size`: an unauthenticated peer cannot make the broker allocate
/// `FRAME_BYTES_MAX`. SASL tokens are a few hundred bytes.
pub const SASL_FRAME_BYTES_MAX: usize = 512 * 1024;

/// SCRAM iterations a credential may have: Kafka's bounds (4096 is RFC 7677's minimum;
/// beyond 16384 every login costs the broker more CPU than it buys against guessing).
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
pub const SCRAM_ITERATIONS_MAX: u32 = 16_384;

/// Iterations of a credential made over the admin API when the request names none: twice the
/// minimum, a few milliseconds of CPU per PLAIN login or new credential.
pub const SCRAM_ITERATIONS_DEFAULT: u32 = 8192;

/// Random bytes of a new credential's salt (RFC 7677's example uses 16; more costs nothing).
pub const SCRAM_SALT_BYTES: usize = 32;

/// Random bytes of the server's part of a SCRAM nonce (base64-encoded on the wire).
pub const SCRAM_NONCE_BYTES: usize = 24;

/// Longest user name a credential may have (names travel in every SASL exchange and in the
/// metadata document).
pub const SASL_USER_NAME_BYTES_MAX: usize = 256;
