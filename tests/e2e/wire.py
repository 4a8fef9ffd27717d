"""A minimal, independent Kafka wire codec for raw-socket tests.

Only what the tests need, encoded by hand from the protocol spec (not by a client
library), so that a broker bug and a client bug cannot cancel out:
request header v1, ApiVersions v0/v3, Produce v3, Fetch v4, InitProducerId v1,
Metadata v4 (request only), RecordBatch v2 (build, parse, CRC-32C).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

# ---------------------------------------------------------------- API keys
PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
INIT_PRODUCER_ID = 22
OFFSET_FOR_LEADER_EPOCH = 23
ADD_PARTITIONS_TO_TXN = 24
ADD_OFFSETS_TO_TXN = 25
END_TXN = 26
TXN_OFFSET_COMMIT = 28
DESCRIBE_CONFIGS = 32
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
CREATE_PARTITIONS = 37
DESCRIBE_USER_SCRAM_CREDENTIALS = 50
ALTER_USER_SCRAM_CREDENTIALS = 51
DESCRIBE_CLUSTER = 60

# ---------------------------------------------------------------- error codes
NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42

# ---------------------------------------------------------------- CRC-32C
_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    t = _CRC32C_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------- primitives
def i8(v): return struct.pack(">b", v)
def i16(v): return struct.pack(">h", v)
def i32(v): return struct.pack(">i", v)
def i64(v): return struct.pack(">q", v)


def string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def nbytes(b: bytes | None) -> bytes:
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items: list[bytes] | None) -> bytes:
    if items is None:
        return i32(-1)
    return i32(len(items)) + b"".join(items)


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v: int) -> bytes:  # zigzag
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"short read: want {n} at {self.pos} of {len(self.data)}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self): return struct.unpack(">b", self.take(1))[0]
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]
    def u32(self): return struct.unpack(">I", self.take(4))[0]
    def i64(self): return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def nbytes(self):
        n = self.i32()
        return None if n < 0 else self.take(n)

    def array(self, f):
        n = self.i32()
        if n < 0:
            return None
        return [f(self) for _ in range(n)]

    def uvarint(self):
        shift = 0
        v = 0
        while True:
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def varint(self):
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def remaining(self) -> int:
        return len(self.data) - self.pos


# ---------------------------------------------------------------- framing
def request(api_key: int, api_version: int, correlation_id: int, body: bytes,
            client_id: str | None = "e2e-raw", flexible: bool = False) -> bytes:
    """A framed request: header v1 (or v2 with an empty tagged-field section when flexible)."""
    header = i16(api_key) + i16(api_version) + i32(correlation_id) + string(client_id)
    if flexible:
        header += uvarint(0)
    payload = header + body
    return i32(len(payload)) + payload


class Conn:
    """One raw TCP connection to the broker, every operation bounded by a timeout."""

    def __init__(self, bootstrap: str, timeout: float = 10.0):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out reading {n} bytes (got {len(buf)})")
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ConnectionError(f"connection closed by broker after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self, timeout: float | None = None) -> bytes:
        """One response frame's payload (without the size prefix)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        size = struct.unpack(">i", self._recv_exact(4, deadline))[0]
        if not 0 <= size <= 256 * 1024 * 1024:
            raise ValueError(f"absurd response frame size {size}")
        return self._recv_exact(size, deadline)

    def roundtrip(self, data: bytes, timeout: float | None = None) -> bytes:
        self.send(data)
        return self.recv_frame(timeout)

    def wait_closed(self, timeout: float = 10.0) -> tuple[bool, bytes]:
        """(True, data) if the broker closed the connection within timeout (EOF or reset);
        (False, data) if it was still open at the deadline. data = anything received before."""
        deadline = time.monotonic() + timeout
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(got)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False, bytes(got)
            except (ConnectionResetError, BrokenPipeError):
                return True, bytes(got)
            if not chunk:
                return True, bytes(got)
            got += chunk
            if len(got) > 16 * 1024 * 1024:
                return False, bytes(got)


# ---------------------------------------------------------------- ApiVersions
def api_versions_v0(correlation_id: int = 1) -> bytes:
    return request(API_VERSIONS, 0, correlation_id, b"")


def api_versions_v3(correlation_id: int = 1) -> bytes:
    body = compact_string("strata-e2e") + compact_string("0.1") + uvarint(0)
    return request(API_VERSIONS, 3, correlation_id, body, flexible=True)


def parse_api_versions_v0(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """(correlation_id, error_code, {api_key: (min, max)}) of a v0 response (header v0)."""
    r = Reader(payload)
    corr = r.i32()
    err = r.i16()
    apis = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
    return corr, err, {k: (lo, hi) for k, lo, hi in (apis or [])}


def parse_api_versions_v3(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """A v3 response: header v0 (always, KIP-511), then a flexible body."""
    r = Reader(payload)
    corr = r.i32()
    err = r.i16()
    n = r.uvarint() - 1
    apis = {}
    for _ in range(max(n, 0)):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        tags = r.uvarint()
        for _ in range(tags):
            r.uvarint()
            r.take(r.uvarint())
        apis[k] = (lo, hi)
    return corr, err, apis


# ---------------------------------------------------------------- RecordBatch v2
@dataclass
class RawRecord:
    key: bytes | None
    value: bytes | None
    headers: list = None
    timestamp_delta: int = 0


def encode_record(offset_delta: int, rec: RawRecord) -> bytes:
    body = bytearray()
    body += i8(0)  # attributes
    body += varint(rec.timestamp_delta)
    body += varint(offset_delta)
    body += varint(-1) if rec.key is None else varint(len(rec.key)) + rec.key
    body += varint(-1) if rec.value is None else varint(len(rec.value)) + rec.value
    headers = rec.headers or []
    body += varint(len(headers))
    for hk, hv in headers:
        hkb = hk.encode()
        body += varint(len(hkb)) + hkb
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def build_batch(records: list[RawRecord], base_offset: int = 0, base_timestamp: int | None = None,
                producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
                attributes: int = 0) -> bytes:
    """An uncompressed RecordBatch v2 with a correct CRC-32C."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    recs = b"".join(encode_record(i, r) for i, r in enumerate(records))
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    after_crc = (i16(attributes) + i32(len(records) - 1) + i64(base_timestamp) + i64(max_ts)
                 + i64(producer_id) + i16(producer_epoch) + i32(base_sequence)
                 + i32(len(records)) + recs)
    crc = crc32c(after_crc)
    after_len = i32(0) + i8(2) + struct.pack(">I", crc) + after_crc  # leader epoch, magic, crc
    return i64(base_offset) + i32(len(after_len)) + after_len


@dataclass
class Batch:
    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    crc_ok: bool
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    raw: bytes

    @property
    def compression(self) -> int:
        return self.attributes & 0x7

    def records(self) -> list[tuple[int, int, bytes | None, bytes | None, list]]:
        """(offset, timestamp, key, value, headers) of an uncompressed batch."""
        assert self.compression == 0, "records() decodes uncompressed batches only"
        r = Reader(self.raw, 61)
        out = []
        for _ in range(self.record_count):
            length = r.varint()
            rr = Reader(r.take(length))
            rr.i8()
            ts_delta = rr.varint()
            off_delta = rr.varint()
            kl = rr.varint()
            key = None if kl < 0 else rr.take(kl)
            vl = rr.varint()
            value = None if vl < 0 else rr.take(vl)
            headers = []
            for _ in range(rr.varint()):
                hk = rr.take(rr.varint()).decode()
                hl = rr.varint()
                headers.append((hk, None if hl < 0 else rr.take(hl)))
            out.append((self.base_offset + off_delta, self.base_timestamp + ts_delta, key, value, headers))
        return out


def parse_batches(blob: bytes) -> list[Batch]:
    """All complete batches in a records blob (a partial batch at the end is allowed in Fetch)."""
    out = []
    pos = 0
    while len(blob) - pos >= 12:
        base_offset, length = struct.unpack(">qi", blob[pos:pos + 12])
        if length < 49 or pos + 12 + length > len(blob):
            break
        raw = blob[pos:pos + 12 + length]
        r = Reader(raw, 12)
        leader_epoch = r.i32()
        magic = r.i8()
        crc = r.u32()
        attrs = r.i16()
        last_delta = r.i32()
        base_ts = r.i64()
        max_ts = r.i64()
        pid = r.i64()
        pepoch = r.i16()
        bseq = r.i32()
        count = r.i32()
        out.append(Batch(base_offset, length, leader_epoch, magic, crc, crc32c(raw[21:]) == crc,
                         attrs, last_delta, base_ts, max_ts, pid, pepoch, bseq, count, raw))
        pos += 12 + length
    return out


# ---------------------------------------------------------------- Produce v3
def produce_v3(correlation_id: int, topic: str, partition: int, records: bytes | None,
               acks: int = -1, timeout_ms: int = 10000) -> bytes:
    body = (string(None) + i16(acks) + i32(timeout_ms)
            + array([string(topic) + array([i32(partition) + nbytes(records)])]))
    return request(PRODUCE, 3, correlation_id, body)


def parse_produce_v3(payload: bytes) -> tuple[int, list[tuple[str, int, int, int]]]:
    """(correlation_id, [(topic, partition, error_code, base_offset)])."""
    r = Reader(payload)
    corr = r.i32()
    out = []
    for _ in range(r.i32()):
        t = r.string()
        for _ in range(r.i32()):
            p, err, base, _lat = r.i32(), r.i16(), r.i64(), r.i64()
            out.append((t, p, err, base))
    return corr, out


# ---------------------------------------------------------------- Fetch v4
def fetch_v4(correlation_id: int, topic: str, partition: int, offset: int, max_wait_ms: int = 0,
             min_bytes: int = 0, max_bytes: int = 16 * 1024 * 1024,
             partition_max_bytes: int = 16 * 1024 * 1024) -> bytes:
    body = (i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)
            + array([string(topic) + array([i32(partition) + i64(offset) + i32(partition_max_bytes)])]))
    return request(FETCH, 4, correlation_id, body)


@dataclass
class FetchPartition:
    topic: str
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    records_len: int          # -1 when null
    records: bytes | None


def parse_fetch_v4(payload: bytes) -> tuple[int, list[FetchPartition]]:
    r = Reader(payload)
    corr = r.i32()
    r.i32()  # throttle
    out = []
    for _ in range(r.i32()):
        t = r.string()
        for _ in range(r.i32()):
            p, err, hw, lso = r.i32(), r.i16(), r.i64(), r.i64()
            r.array(lambda r: (r.i64(), r.i64()))
            n = r.i32()
            recs = None if n < 0 else r.take(n)
            out.append(FetchPartition(t, p, err, hw, lso, n, recs))
    return corr, out


# ---------------------------------------------------------------- InitProducerId v1
def init_producer_id_v1(correlation_id: int) -> bytes:
    return request(INIT_PRODUCER_ID, 1, correlation_id, string(None) + i32(60000))


def parse_init_producer_id_v1(payload: bytes) -> tuple[int, int, int, int]:
    """(correlation_id, error_code, producer_id, producer_epoch)."""
    r = Reader(payload)
    corr = r.i32()
    r.i32()
    return corr, r.i16(), r.i64(), r.i16()


# ---------------------------------------------------------------- Metadata v4
def metadata_v4(correlation_id: int, topics: list[str] | None = None) -> bytes:
    t = None if topics is None else [string(x) for x in topics]
    return request(METADATA, 4, correlation_id, array(t) + i8(0))


def response_correlation_id(payload: bytes) -> int:
    return struct.unpack(">i", payload[:4])[0]
