"""Shared helpers of the deploy checks: paths, the strata binary, terraform, and processes that
are always stopped (their whole process group) at teardown."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
VENV_BIN = Path(sys.executable).parent
# Terraform must not phone home for version checks: the registries are all it may reach.
TERRAFORM_ENV = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}


def strata_bin() -> Path:
    env = os.environ.get("STRATA_BIN")
    if env:
        return Path(env).resolve()
    release = REPO / "target" / "release" / "strata"
    return release if release.exists() else REPO / "target" / "debug" / "strata"


def terraform_bin() -> Path:
    return VENV_BIN / "terraform"


def unquote(value):
    """python-hcl2 keeps the quotes of string literals and block labels: drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


def load_tf(name: str) -> dict:
    with open(TERRAFORM_DIR / name) as f:
        return unquote(hcl2.load(f))


def blocks(doc: dict, kind: str, type_: str) -> dict[str, dict]:
    """{name: body} of the `kind "type_" "name"` blocks (resource, data) in a loaded file."""
    found = {}
    for entry in doc.get(kind, []):
        for name, body in entry.get(type_, {}).items():
            found[name] = body
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child in its own session; its stdout lines are queued and copied to a log file."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        out = open(log, "ab")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=out, start_new_session=True)
        out.close()
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "ab") as out:
            for raw in self.proc.stdout:
                out.write(raw)
                out.flush()
                self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with `prefix`; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"{self.proc.args[0]}: no line `{prefix}` within {timeout} s "
                             f"(exit code {self.proc.poll()}); log:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # The group may hold children that outlived the script (the S3 server).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Processes:
    """Starts processes; the fixture stops every one of them at teardown."""

    def __init__(self):
        self.started: list[Process] = []

    def __call__(self, args: list[str], log: Path, env: dict | None = None) -> Process:
        p = Process(args, log, env)
        self.started.append(p)
        return p


@pytest.fixture
def processes():
    started = Processes()
    yield started
    for p in reversed(started.started):
        p.stop()
