#!/usr/bin/env bash
# Starts strata against a local S3 server, with the same endpoint configuration as the S3
# tests: an s3:// URL, an endpoint override (path-style addressing, plain HTTP) and static
# credentials.
#   localstack/start-broker.sh minio        # compose.minio.yml:      http://127.0.0.1:9000
#   localstack/start-broker.sh localstack   # compose.localstack.yml: http://127.0.0.1:4566
#   localstack/start-broker.sh moto         # s3-server.sh moto:      http://127.0.0.1:5000
# Extra arguments go to `strata serve`. Every setting can also come from the environment
# (STRATA_KAFKA_LISTEN, STRATA_DATA_DIR ...); S3_ENDPOINT overrides the endpoint.
# The binary: $STRATA_BIN, else target/release/strata, else `strata` on PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
kind=${1:?usage: start-broker.sh minio|localstack|moto [strata serve flags]}
shift

case $kind in
    minio)
        endpoint=http://127.0.0.1:9000
        export AWS_ACCESS_KEY_ID=strata AWS_SECRET_ACCESS_KEY=strata-secret ;;
    localstack)
        endpoint=http://127.0.0.1:4566
        export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test ;;
    moto)
        endpoint=http://127.0.0.1:5000
        export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test ;;
    *)
        echo "start-broker.sh: unknown target '$kind' (minio, localstack or moto)" >&2
        exit 2 ;;
esac
export AWS_REGION=${AWS_REGION:-us-east-1}
# Static credentials only: do not wait for an instance metadata service that is not there.
export AWS_EC2_METADATA_DISABLED=true

bin=${STRATA_BIN:-}
if [[ -z $bin ]]; then
    if [[ -x $repo/target/release/strata ]]; then bin=$repo/target/release/strata; else bin=strata; fi
fi

export STRATA_DATA_DIR=${STRATA_DATA_DIR:-$repo/data/$kind}
export STRATA_OBJECT_STORE=${STRATA_OBJECT_STORE:-s3://${STRATA_S3_BUCKET:-strata}/dev}
export STRATA_S3_ENDPOINT=${S3_ENDPOINT:-$endpoint}
echo "start-broker.sh: $STRATA_OBJECT_STORE at $STRATA_S3_ENDPOINT, data in $STRATA_DATA_DIR" >&2
exec "$bin" serve "$@"
