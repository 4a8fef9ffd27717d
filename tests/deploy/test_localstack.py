"""localstack/ end to end, without Docker: the S3 server runs as a plain process
(localstack/s3-server.sh: LocalStack's runtime, or moto), the broker is started by
localstack/start-broker.sh (s3:// URL, endpoint override, static credentials: the same endpoint
configuration the compose files document), and localstack/smoke.py produces, forces an upload,
checks that the WAL was trimmed and the range is in the bucket, and consumes it back from there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, free_port, strata_bin

S3_START_S = 180.0   # LocalStack needs 2-10 s; a loaded 2-core machine may take much longer
BROKER_START_S = 60.0


def run_smoke(processes, tmp_path, kind: str, wrapper: list[str] | None = None) -> str:
    port = free_port()
    s3 = processes(["bash", "localstack/s3-server.sh", kind], tmp_path / f"{kind}.log",
                   env={**os.environ, "S3_PORT": str(port), "STRATA_S3_BUCKET": "strata-smoke"})
    s3.wait_for("s3 ready:", S3_START_S)

    env = {**os.environ, "STRATA_BIN": str(strata_bin()),
           "S3_ENDPOINT": f"http://127.0.0.1:{port}", "STRATA_S3_BUCKET": "strata-smoke",
           "STRATA_DATA_DIR": str(tmp_path / "data"),
           "STRATA_KAFKA_LISTEN": "127.0.0.1:0", "STRATA_ADMIN_LISTEN": "127.0.0.1:0"}
    env.pop("STRATA_OBJECT_STORE", None)
    broker = processes([*(wrapper or []), "bash", "localstack/start-broker.sh", kind],
                       tmp_path / "broker.log", env=env)
    kafka = broker.wait_for("strata: kafka listening on ", BROKER_START_S).split()[-1]
    admin = broker.wait_for("strata: admin listening on ", BROKER_START_S).split()[-1]
    broker.wait_for("strata: ready", BROKER_START_S)

    smoke = subprocess.run([sys.executable, "localstack/smoke.py", "--bootstrap", kafka,
                            "--admin", f"http://{admin}", "--records", "3000"],
                           cwd=REPO, capture_output=True, text=True, timeout=240)
    assert smoke.returncode == 0, (f"smoke failed:\n{smoke.stdout}{smoke.stderr}\n"
                                   f"broker log:\n{broker.tail()}\nS3 log:\n{s3.tail()}")
    assert smoke.stdout.rstrip().endswith("smoke: ok")
    assert "s3://strata-smoke/dev" in broker.log.read_text()
    return smoke.stdout


def test_smoke_against_localstack_as_a_process(processes, tmp_path):
    out = run_smoke(processes, tmp_path, "localstack")
    assert "consumed 3000 records from the bucket" in out


def test_smoke_against_moto(processes, tmp_path):
    if not (REPO / ".venv" / "bin" / "moto_server").exists():
        pytest.skip(".venv/bin/moto_server missing (scripts/test installs it)")
    out = run_smoke(processes, tmp_path, "moto")
    assert "consumed 3000 records from the bucket" in out


def syscall_set(filter_name: str) -> set[str]:
    """The system calls of a systemd filter set, nested sets expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", filter_name], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= syscall_set(item) if item.startswith("@") else {item}
    return names


@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("systemd-analyze") is None,
                    reason="needs strace and systemd-analyze")
def test_broker_system_calls_fit_the_units_seccomp_filter(processes, tmp_path):
    """deploy/strata.service allows @system-service minus @privileged: every system call the
    broker (and start-broker.sh) makes through a whole smoke run must be in that set, or systemd
    would kill it on the VM."""
    if not (REPO / ".venv" / "bin" / "moto_server").exists():
        pytest.skip(".venv/bin/moto_server missing (scripts/test installs it)")
    unit = (REPO / "deploy" / "strata.service").read_text()
    assert "SystemCallFilter=@system-service" in unit and "SystemCallFilter=~@privileged" in unit
    trace = tmp_path / "strace.txt"
    run_smoke(processes, tmp_path, "moto", wrapper=["strace", "-f", "-qq", "-o", str(trace)])
    for p in processes.started:
        p.stop()
    used = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace.read_text(), re.M))
    assert len(used) > 20, f"strace saw too little: {sorted(used)}"
    allowed = syscall_set("@system-service") - syscall_set("@privileged")
    assert used <= allowed, f"outside the unit's filter: {sorted(used - allowed)}"


def test_start_broker_refuses_an_unknown_target():
    result = subprocess.run(["bash", "localstack/start-broker.sh", "gcs"], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown target 'gcs'" in result.stderr


def test_compose_files_serve_what_start_broker_expects():
    """Docker is not on the CI machines: check that the compose files publish the endpoint,
    credentials and bucket that start-broker.sh uses, and create the bucket."""
    import yaml

    script = (REPO / "localstack" / "start-broker.sh").read_text()
    minio = yaml.safe_load((REPO / "localstack" / "compose.minio.yml").read_text())["services"]
    assert "127.0.0.1:9000:9000" in minio["minio"]["ports"]
    env = minio["minio"]["environment"]
    assert (f"AWS_ACCESS_KEY_ID={env['MINIO_ROOT_USER']} "
            f"AWS_SECRET_ACCESS_KEY={env['MINIO_ROOT_PASSWORD']}") in script
    assert "endpoint=http://127.0.0.1:9000" in script
    assert "mc mb --ignore-existing local/strata" in minio["create-bucket"]["entrypoint"]
    assert minio["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"

    localstack = yaml.safe_load((REPO / "localstack" / "compose.localstack.yml").read_text())
    service = localstack["services"]["localstack"]
    assert "127.0.0.1:4566:4566" in service["ports"]
    assert "endpoint=http://127.0.0.1:4566" in script
    (init,) = [v for v in service["volumes"] if "/etc/localstack/init/ready.d/" in v]
    hook = REPO / "localstack" / init.split(":")[0]
    assert hook.exists() and os.access(hook, os.X_OK)
    assert 's3 mb "s3://${STRATA_S3_BUCKET:-strata}"' in hook.read_text()
    assert "s3://${STRATA_S3_BUCKET:-strata}/dev" in script
