#!/usr/bin/env bash
# An S3 server as a plain process, without Docker, with the bucket created:
#   localstack/s3-server.sh localstack   # LocalStack's runtime on 127.0.0.1:4566 (.venv-ls)
#   localstack/s3-server.sh moto         # moto's server on 127.0.0.1:5000 (.venv, as the tests)
# Prints `s3 ready: ENDPOINT` once the bucket exists and runs until Ctrl-C or SIGTERM.
# Environment: S3_PORT (port), STRATA_S3_BUCKET (bucket, default strata).
# With Docker, use compose.localstack.yml or compose.minio.yml instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
kind=${1:?usage: s3-server.sh localstack|moto}
bucket=${STRATA_S3_BUCKET:-strata}

case $kind in
    localstack)
        "$repo/scripts/venv-ls"
        py="$repo/.venv-ls/bin/python"
        port=${S3_PORT:-4566}
        # No DNS server, no certificate download, no usage events: S3 on loopback only.
        GATEWAY_LISTEN=127.0.0.1:$port SERVICES=s3 DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 \
            DISABLE_EVENTS=1 "$py" -m localstack.runtime.main &
        ;;
    moto)
        py="$repo/.venv/bin/python"
        if [[ ! -x $repo/.venv/bin/moto_server ]]; then
            echo "s3-server.sh: no .venv/bin/moto_server: run scripts/test once, or" \
                "python3 -m venv .venv && .venv/bin/pip install 'moto[server]' boto3" >&2
            exit 2
        fi
        port=${S3_PORT:-5000}
        "$repo/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" &
        ;;
    *)
        echo "s3-server.sh: unknown server '$kind' (localstack or moto)" >&2
        exit 2
        ;;
esac
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
trap 'exit 0' INT TERM
endpoint=http://127.0.0.1:$port

# Create the bucket as soon as the server answers (LocalStack: 1-3 s; give a loaded machine 120 s).
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$py" - "$endpoint" "$bucket" <<'PY'
import sys, time
import boto3, botocore.exceptions
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
deadline = time.monotonic() + 120
while True:
    try:
        s3.create_bucket(Bucket=bucket)
        break
    except s3.exceptions.BucketAlreadyOwnedByYou:
        break
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ClientError) as error:
        if time.monotonic() > deadline:
            sys.exit(f"s3-server.sh: cannot create bucket {bucket} at {endpoint}: {error}")
        time.sleep(0.5)
PY
echo "s3 ready: $endpoint bucket $bucket"
wait "$server"
