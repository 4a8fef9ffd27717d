"""Fixtures that run the real `strata` binary for the end-to-end tests.

Every test gets a broker of its own (function scope) in a fresh data dir, on
port 0, so tests cannot see each other's topics. The broker object can be
killed (SIGKILL), stopped (SIGTERM, exit code 0 asserted), restarted on the same
data dir and paused (SIGSTOP/SIGCONT). Every wait is bounded. At teardown the
process is always gone; a broker that died on its own, or that did not exit 0
on SIGTERM, fails the test. On failure the tail of the broker's stderr is added
to the report.
"""

from __future__ import annotations

import ctypes
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
STDERR_TAIL_LINES = 80

_KAFKA_RE = re.compile(r"^strata: kafka listening on (\S+):(\d+)$")
_ADMIN_RE = re.compile(r"^strata: admin listening on (\S+):(\d+)$")
_READY = "strata: ready"


def strata_bin() -> Path:
    env = os.environ.get("STRATA_BIN")
    if env:
        p = Path(env)
        if not p.is_absolute():
            p = (Path.cwd() / p).resolve()
        return p
    release = REPO / "target" / "release" / "strata"
    if release.exists():
        return release
    return REPO / "target" / "debug" / "strata"


def _die_with_parent() -> None:
    """preexec_fn: the broker gets SIGKILL if pytest dies, so none is left behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort only
        pass


# Every broker that has not been torn down yet: their stderr tails go into the
# report of a failing test.
_LIVE_BROKERS: list["Broker"] = []


class BrokerError(AssertionError):
    pass


class Broker:
    """One strata process (and its restarts) on one data dir."""

    def __init__(self, workdir: Path, extra_args: list[str] | None = None, name: str = "strata",
                 data_dir: Path | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir is not None else self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args or [])
        self.name = name
        self.stderr_path = self.workdir / f"{name}.stderr.log"
        self.stdout_path = self.workdir / f"{name}.stdout.log"
        self.proc: subprocess.Popen | None = None
        self.kafka_host: str | None = None
        self.kafka_port: int | None = None
        self.admin_host: str | None = None
        self.admin_port: int | None = None
        self.starts = 0
        self._stdout_thread: threading.Thread | None = None
        self._paused = False
        self._expected_exit = False
        _LIVE_BROKERS.append(self)

    # ----------------------------------------------------------------- addresses
    @property
    def bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def admin(self) -> str:
        return f"{self.admin_host}:{self.admin_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self, kafka_listen: str = "127.0.0.1:0", admin_listen: str = "127.0.0.1:0",
              timeout: float = START_TIMEOUT_S) -> "Broker":
        assert not self.alive(), "broker already running"
        binary = strata_bin()
        if not binary.exists():
            raise BrokerError(f"strata binary not found at {binary} (set STRATA_BIN or run cargo build --release)")
        self.starts += 1
        self._expected_exit = False
        args = [
            str(binary), "serve",
            "--data-dir", str(self.data_dir),
            "--kafka-listen", kafka_listen,
            "--admin-listen", admin_listen,
            *self.extra_args,
        ]
        with open(self.stderr_path, "ab") as f:
            f.write(f"\n===== start #{self.starts}: {' '.join(args)}\n".encode())
        stderr = open(self.stderr_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        try:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                env=env, preexec_fn=_die_with_parent,
            )
        finally:
            stderr.close()
        self._paused = False

        # A reader thread copies stdout to a file (so the pipe never fills up)
        # and hands the lines to us until `strata: ready`.
        lines: "queue.Queue[str | None]" = queue.Queue()
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            with open(self.stdout_path, "ab") as out:
                for raw in proc.stdout:
                    out.write(raw)
                    out.flush()
                    lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
            lines.put(None)

        self._stdout_thread = threading.Thread(target=pump, name=f"{self.name}-stdout", daemon=True)
        self._stdout_thread.start()

        kafka = admin = None
        deadline = time.monotonic() + timeout
        ready = False
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if line is None:
                break  # stdout closed: the process exited
            m = _KAFKA_RE.match(line.strip())
            if m:
                kafka = (m.group(1), int(m.group(2)))
                continue
            m = _ADMIN_RE.match(line.strip())
            if m:
                admin = (m.group(1), int(m.group(2)))
                continue
            if line.strip() == _READY:
                ready = True
                break
        if not ready:
            rc = self.proc.poll()
            self._force_kill()
            raise BrokerError(
                f"strata did not print '{_READY}' within {timeout}s (exit code {rc}).\n"
                f"stderr tail:\n{self.stderr_tail()}"
            )
        if kafka is None or admin is None:
            self._force_kill()
            raise BrokerError(f"strata: ready printed before both listen lines (kafka={kafka}, admin={admin})")
        self.kafka_host, self.kafka_port = kafka
        self.admin_host, self.admin_port = admin
        status = self.wait_ready_http(timeout=max(1.0, deadline - time.monotonic()))
        if status != 200:
            self._force_kill()
            raise BrokerError(f"GET /health/ready answered {status} after 'strata: ready'")
        return self

    def wait_ready_http(self, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.http_get_status("/health/ready", timeout=2.0)
            if status == 200:
                return 200
            time.sleep(0.05)
        return status

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        url = f"http://{self.admin}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def http_get_status(self, path: str, timeout: float = 5.0) -> int | None:
        try:
            return self.http_get(path, timeout=timeout)[0]
        except (urllib.error.URLError, OSError, TimeoutError):
            return None

    def _wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _join_stdout(self) -> None:
        if self._stdout_thread is not None:
            self._stdout_thread.join(timeout=5)
            self._stdout_thread = None

    def _force_kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            except ProcessLookupError:
                pass
            self._wait(10)
        self._join_stdout()

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        assert self.alive(), f"kill(): broker not running (exit code {self.proc and self.proc.poll()})"
        self._expected_exit = True
        self.proc.send_signal(signal.SIGKILL)
        rc = self._wait(10)
        assert rc is not None, "broker did not die on SIGKILL within 10s"
        self._paused = False
        self._join_stdout()

    def wait_exit(self, timeout: float) -> int | None:
        """Waits (bounded) for the process to end by itself, as an injected crash ends it: its
        exit code (negative: the signal), or None if it is still running."""
        assert self.proc is not None
        rc = self._wait(timeout)
        if rc is not None:
            self._expected_exit = True
            self._paused = False
            self._join_stdout()
        return rc

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, assert exit code 0."""
        assert self.proc is not None, "stop(): never started"
        self._expected_exit = True
        rc = self.proc.poll()
        if rc is not None:
            self._join_stdout()
            raise BrokerError(f"broker had already exited with code {rc} before stop()\n"
                              f"stderr tail:\n{self.stderr_tail()}")
        if self._paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        rc = self._wait(timeout)
        if rc is None:
            self._force_kill()
            raise BrokerError(f"broker did not exit within {timeout}s of SIGTERM (killed)\n"
                              f"stderr tail:\n{self.stderr_tail()}")
        self._join_stdout()
        if rc != 0:
            raise BrokerError(f"broker exited with code {rc} on SIGTERM (expected 0)\n"
                              f"stderr tail:\n{self.stderr_tail()}")
        return rc

    def restart(self, same_ports: bool = False, timeout: float = START_TIMEOUT_S) -> "Broker":
        """Start again on the same data dir (SIGTERM first if still running).

        With same_ports=True the broker binds the kafka and admin ports it had
        before, so that clients created before the restart reconnect to it.
        """
        if self.alive():
            self.stop()
        if same_ports and self.kafka_port is not None:
            # The old port may linger briefly; retry a bounded number of times.
            last: Exception | None = None
            for _ in range(20):
                try:
                    return self.start(kafka_listen=f"{self.kafka_host}:{self.kafka_port}",
                                      admin_listen=f"{self.admin_host}:{self.admin_port}",
                                      timeout=timeout)
                except BrokerError as e:
                    last = e
                    time.sleep(0.5)
            raise BrokerError(f"could not restart on the same ports: {last}")
        return self.start(timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker stops answering but keeps its sockets."""
        assert self.alive()
        self.proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self._paused = False

    def cpu_seconds(self) -> float:
        """utime+stime of the broker process, from /proc."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stderr_tail(self, n: int = STDERR_TAIL_LINES) -> str:
        try:
            data = self.stderr_path.read_bytes()
        except OSError:
            return "(no stderr file)"
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    def discard(self) -> None:
        """Kill (if running) and forget, without judging how the process ended."""
        self._force_kill()
        if self in _LIVE_BROKERS:
            _LIVE_BROKERS.remove(self)

    def teardown(self) -> None:
        """Always leaves no process behind. Raises if the broker misbehaved."""
        try:
            if self.proc is None:
                return
            rc = self.proc.poll()
            if rc is not None:
                self._join_stdout()
                # A broker that was stop()ped/kill()ed by the test is fine; one that
                # died by itself is not.
                if self._expected_exit:
                    return
                raise BrokerError(f"broker died during the test with exit code {rc}\n"
                                  f"stderr tail:\n{self.stderr_tail()}")
            self.stop()
        finally:
            self._force_kill()
            if self in _LIVE_BROKERS:
                _LIVE_BROKERS.remove(self)


# --------------------------------------------------------------------- fixtures
@pytest.fixture
def start_broker(tmp_path):
    """Factory: start_broker(*extra_args) -> a started Broker, torn down after the test."""
    started: list[Broker] = []

    def factory(*extra_args: str, name: str | None = None) -> Broker:
        name = name or f"strata{len(started)}"
        b = Broker(tmp_path / name, list(extra_args), name=name)
        started.append(b)
        return b.start()

    yield factory
    errors = []
    for b in started:
        try:
            b.teardown()
        except Exception as e:  # noqa: BLE001 - report all of them
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def broker(start_broker) -> Broker:
    """A broker with default settings, for one test."""
    return start_broker()


# ------------------------------------------------------------------ reporting
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for b in list(_LIVE_BROKERS):
            report.sections.append(
                (f"{b.name} stderr (last {STDERR_TAIL_LINES} lines, {b.stderr_path})", b.stderr_tail())
            )
