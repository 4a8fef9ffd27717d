"""Offline checks of terraform/ and deploy/: `terraform init/validate` need the provider
registry, which CI cannot reach, so this checks what can be checked without it:

- `terraform fmt -check` (terraform 1.0.3, the oldest version the module supports);
- every .tf file parses (python-hcl2) and uses nothing newer than Terraform 1.0;
- the bucket, IAM, security group and instance say what the deployment promises;
- the bootstrap template, rendered by terraform's own `templatefile` with exactly the keys that
  main.tf passes, is valid bash, installs deploy/strata.service unchanged, and writes a config
  file whose every setting `strata serve --check-config` accepts, with a reachable advertised
  address;
- deploy/strata.service passes `systemd-analyze verify`;
- checkov's terraform policies pass (each skipped check says why in main.tf).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import (REPO, TERRAFORM_DIR, TERRAFORM_ENV, blocks, load_tf, strata_bin,
                      terraform_bin)

TF_FILES = sorted(p.name for p in TERRAFORM_DIR.glob("*.tf"))
UNIT = REPO / "deploy" / "strata.service"
TEMPLATE = TERRAFORM_DIR / "user-data.sh.tftpl"

# Language features and functions that Terraform 1.0 does not have.
NEWER_THAN_1_0 = [r"\boptional\(", r"\bnullable\s*=", r"\bprecondition\b", r"\bpostcondition\b",
                  r"^\s*moved\s*\{", r"^\s*import\s*\{", r"^\s*check\s+\"", r"\bstartswith\(",
                  r"\bendswith\(", r"\bstrcontains\(", r"\btimecmp\(", r"\bplantimestamp\(",
                  r"\bterraform_data\b"]

# The object operations the broker sends (src/indexer, src/reader, src/metadata/snapshot.rs),
# as IAM actions; multipart Create/UploadPart/Complete are all s3:PutObject.
BROKER_OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                         "s3:DeleteObject"}


def test_terraform_fmt_check():
    result = subprocess.run([str(terraform_bin()), "fmt", "-check", "-diff", "-recursive",
                             str(TERRAFORM_DIR)], capture_output=True, text=True,
                            env=TERRAFORM_ENV, timeout=120)
    assert result.returncode == 0, f"terraform fmt -check:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", TF_FILES)
def test_tf_file_parses_and_needs_only_terraform_1_0(name):
    doc = load_tf(name)
    assert doc, f"{name} parsed to nothing"
    text = (TERRAFORM_DIR / name).read_text()
    for pattern in NEWER_THAN_1_0:
        assert not re.search(pattern, text, re.M), f"{name} uses {pattern}, newer than Terraform 1.0"


def test_module_has_the_promised_variables_and_outputs():
    variables = {name for v in load_tf("variables.tf")["variable"] for name in v}
    for wanted in ["region", "instance_type", "allowed_cidrs", "bucket_name", "binary_source"]:
        assert wanted in variables
    outputs = {name for o in load_tf("outputs.tf")["output"] for name in o}
    assert {"bootstrap_servers", "admin_url", "bucket_name"} <= outputs
    versions = load_tf("versions.tf")
    assert versions["terraform"][0]["required_version"] == ">= 1.0.0"


def test_bucket_is_encrypted_private_and_drops_incomplete_multipart_uploads():
    main = load_tf("main.tf")
    sse = blocks(main, "resource", "aws_s3_bucket_server_side_encryption_configuration")["broker"]
    algorithm = sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"]
    assert algorithm in {"AES256", "aws:kms"}
    pab = blocks(main, "resource", "aws_s3_bucket_public_access_block")["broker"]
    for setting in ["block_public_acls", "block_public_policy", "ignore_public_acls",
                    "restrict_public_buckets"]:
        assert pab[setting] is True, setting
    rules = blocks(main, "resource", "aws_s3_bucket_lifecycle_configuration")["broker"]["rule"]
    aborts = [r for r in rules if r["status"] == "Enabled" and r.get("abort_incomplete_multipart_upload")]
    assert aborts and aborts[0]["abort_incomplete_multipart_upload"][0]["days_after_initiation"] >= 1


def test_instance_role_allows_exactly_the_broker_object_operations_under_its_prefix():
    main = load_tf("main.tf")
    policy = blocks(main, "data", "aws_iam_policy_document")["broker"]
    statements = {s["sid"]: s for s in policy["statement"]}
    objects = statements["BrokerObjects"]
    assert set(objects["actions"]) == BROKER_OBJECT_ACTIONS
    assert objects["resources"] == ["${aws_s3_bucket.broker.arn}/${var.bucket_prefix}/*"]
    listing = statements["ListBrokerPrefix"]
    assert listing["actions"] == ["s3:ListBucket"]
    assert listing["resources"] == ["${aws_s3_bucket.broker.arn}"]
    condition = listing["condition"][0]
    assert (condition["test"], condition["variable"]) == ("StringLike", "s3:prefix")
    assert condition["values"] == ["${var.bucket_prefix}/*"]
    # Nothing else: no wildcard actions, no other statements but the one for the binary.
    assert set(statements) == {"BrokerObjects", "ListBrokerPrefix"}
    (dynamic,) = policy["dynamic"]
    (binary,) = dynamic["statement"]["content"]
    assert binary["actions"] == ["s3:GetObject"]
    assert "*" not in binary["resources"][0].replace("${", "").split("/")[-1]
    role = blocks(main, "resource", "aws_iam_instance_profile")["broker"]
    assert role["role"] == "${aws_iam_role.broker.name}"
    assert blocks(main, "resource", "aws_instance")["broker"]["iam_instance_profile"] == \
        "${aws_iam_instance_profile.broker.name}"


def test_security_group_opens_kafka_and_admin_only_to_the_allowed_cidrs():
    group = blocks(load_tf("main.tf"), "resource", "aws_security_group")["broker"]
    ingress = {rule["description"]: rule for rule in group["ingress"]}
    kafka = ingress["Kafka"]
    assert (kafka["from_port"], kafka["to_port"]) == ("${var.kafka_port}", "${var.kafka_port}")
    assert kafka["cidr_blocks"] == "${var.allowed_cidrs}"
    admin = next(r for d, r in ingress.items() if d.startswith("strata admin"))
    assert (admin["from_port"], admin["to_port"]) == ("${var.admin_port}", "${var.admin_port}")
    assert admin["cidr_blocks"] == "${local.admin_cidrs}"
    assert "0.0.0.0/0" not in json.dumps(group["ingress"]) + json.dumps(group.get("dynamic", []))


def test_instance_has_a_separate_encrypted_data_volume_and_imdsv2():
    main = load_tf("main.tf")
    volume = blocks(main, "resource", "aws_ebs_volume")["data"]
    assert volume["encrypted"] is True
    attachment = blocks(main, "resource", "aws_volume_attachment")["data"]
    assert attachment["volume_id"] == "${aws_ebs_volume.data.id}"
    assert attachment["stop_instance_before_detaching"] is True
    instance = blocks(main, "resource", "aws_instance")["broker"]
    assert instance["metadata_options"][0]["http_tokens"] == "required"
    assert instance["user_data"].startswith("${templatefile(")


CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


@pytest.mark.skipif(not CHECKOV.exists(), reason="no .venv-checkov (scripts/venv-ls installs it)")
def test_checkov_terraform_policies_pass():
    # --skip-download: no guideline download from checkov's vendor (CI is offline).
    result = subprocess.run([str(CHECKOV), "-d", str(TERRAFORM_DIR), "--framework", "terraform",
                             "--compact", "--quiet", "--skip-download"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"checkov:\n{result.stdout}{result.stderr}"
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", result.stdout), result.stdout


# ------------------------------------------------------------------------ the bootstrap
def bootstrap_keys() -> list[str]:
    (main_locals,) = [l for l in load_tf("main.tf")["locals"] if "bootstrap_vars" in l]
    return list(main_locals["bootstrap_vars"])


SAMPLE = {
    "region": "eu-west-1",
    "object_store_url": "s3://example-strata/strata",
    "binary_url": "",
    "binary_s3_uri": "s3://example-strata/bootstrap/strata-" + "0" * 64,
    "binary_sha256": "0" * 64,
    "data_volume_id": "vol-0123456789abcdef0",
    "kafka_port": 9092,
    "admin_port": 9080,
    "advertised_host": "",
    "admin_token": "",
    "cache_memory_bytes": 1073741824,
    "cache_disk_bytes": 42949672960,
    "wal_disk_bytes_max": 42949672960,
    "wal_segment_ms": 60000,
    "log_filter": "info",
    "service_unit": UNIT.read_text(),
}


def hcl_literal(value) -> str:
    if isinstance(value, str):
        # A JSON string is an HCL string once template sequences are escaped.
        return json.dumps(value).replace("${", "$${").replace("%{", "%%{")
    return json.dumps(value)


def render_bootstrap(tmp_path, values: dict) -> str:
    """The user data, rendered by terraform's templatefile (offline: `terraform console` in an
    empty directory needs no provider)."""
    entries = ", ".join(f"{k} = {hcl_literal(v)}" for k, v in values.items())
    expression = f"base64encode(templatefile({json.dumps(str(TEMPLATE))}, {{ {entries} }}))\n"
    result = subprocess.run([str(terraform_bin()), "console"], input=expression, cwd=tmp_path,
                            capture_output=True, text=True, env=TERRAFORM_ENV, timeout=120)
    assert result.returncode == 0, f"templatefile failed:\n{result.stdout}{result.stderr}"
    return base64.b64decode(result.stdout.strip().strip('"')).decode()


def config_from(script: str, shell_vars: dict[str, str]) -> str:
    """The TOML that the script writes, its shell variables expanded as bash would."""
    match = re.search(r"^cat > /etc/strata/strata\.toml <<CONFIG\n(.*?)^CONFIG$", script, re.M | re.S)
    assert match, "the bootstrap no longer writes /etc/strata/strata.toml with <<CONFIG"
    assigns = "".join(f"{k}={json.dumps(v)}\n" for k, v in shell_vars.items())
    heredoc = f"{assigns}cat <<CONFIG\n{match.group(1)}CONFIG\n"
    return subprocess.run(["bash", "-c", heredoc], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def test_bootstrap_template_gets_exactly_the_keys_main_tf_passes(tmp_path):
    keys = bootstrap_keys()
    assert set(keys) == set(SAMPLE), "update SAMPLE in this test with the new bootstrap_vars"
    text = TEMPLATE.read_text()
    for key in keys:
        assert re.search(r"\$\{\s*" + key + r"\s*\}", text), f"bootstrap_vars.{key} is unused"
    # templatefile fails on a key the template uses but main.tf does not pass.
    render_bootstrap(tmp_path, {k: SAMPLE[k] for k in keys})


def test_bootstrap_script_is_bash_and_installs_the_unit_unchanged(tmp_path):
    script = render_bootstrap(tmp_path, SAMPLE)
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    unit = re.search(r"<<'UNIT'\n(.*?)^UNIT$", script, re.M | re.S)
    assert unit and unit.group(1).rstrip("\n") == UNIT.read_text().rstrip("\n")
    assert "systemctl enable --now strata.service" in script


def test_every_setting_the_bootstrap_writes_is_accepted_by_check_config(tmp_path):
    script = render_bootstrap(tmp_path, SAMPLE)
    toml_text = config_from(script, {"advertised_host": "10.0.0.5", "admin_token": "f" * 64})
    settings = tomllib.loads(toml_text)
    assert "admin_token" in settings, "the admin API listens on every interface: it needs a token"
    config = tmp_path / "strata.toml"
    config.write_text(toml_text)
    result = subprocess.run([str(strata_bin()), "serve", "--config", str(config), "--check-config"],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, f"strata rejected the bootstrap's config:\n{result.stderr}"
    effective = tomllib.loads(result.stdout)
    for key, value in tomllib.loads(toml_text).items():
        if "token" in key:
            continue  # a secret: accepted (exit 0) is enough; it may be redacted in the output
        assert key in effective, f"{key} missing from --check-config's output"
        assert effective[key] == value, f"{key}: wrote {value!r}, strata reads {effective[key]!r}"
    assert effective["advertised_listener"] == "10.0.0.5:9092"
    assert effective["kafka_listen"] == "0.0.0.0:9092"
    assert effective["object_store"] == SAMPLE["object_store_url"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    unit = tmp_path / "strata.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/strata", str(strata_bin())))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    text = UNIT.read_text()
    for line in ["Restart=on-failure", "KillSignal=SIGTERM", "User=strata", "NoNewPrivileges=true"]:
        assert line in text
    assert re.search(r"^TimeoutStopSec=\d+", text, re.M)
    assert re.search(r"^LimitNOFILE=\d+", text, re.M)
