#!/bin/sh
# LocalStack init hook (ready.d): the bucket strata uses in localstack/start-broker.sh.
set -eu
awslocal s3 mb "s3://${STRATA_S3_BUCKET:-strata}" || awslocal s3api head-bucket --bucket "${STRATA_S3_BUCKET:-strata}"
