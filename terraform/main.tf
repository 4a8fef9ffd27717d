# A strata broker on one EC2 instance next to its S3 bucket.
#
# The broker's WAL, metadata and block cache live on a separate encrypted EBS volume that
# outlives the instance (an upgrade that replaces the instance re-attaches it); its objects live
# in the bucket, which only this instance's role can use, and only under bucket_prefix.

locals {
  object_store_url = "s3://${var.bucket_name}/${var.bucket_prefix}"
  binary_is_url    = can(regex("^https://", var.binary_source))
  binary_sha256    = local.binary_is_url ? local.url_sha256 : filesha256(var.binary_source)
  binary_key       = "bootstrap/strata-${local.binary_sha256}"
  admin_cidrs      = var.admin_allowed_cidrs == null ? var.allowed_cidrs : var.admin_allowed_cidrs
  ami_id           = var.ami_id != "" ? var.ami_id : try(data.aws_ssm_parameter.al2023[0].insecure_value, "")
  subnet_id        = var.subnet_id != "" ? var.subnet_id : try(sort(data.aws_subnets.default[0].ids)[0], "")

  # An https:// binary must come with its checksum: reading this "file" fails the plan and
  # shows the message.
  url_sha256 = var.binary_sha256 != "" ? var.binary_sha256 : file("binary_sha256 is required when binary_source is an https:// URL")

  # Empty: the Elastic IP, or (without one) the private IP that the bootstrap reads from the
  # instance metadata at boot. Never the bind address 0.0.0.0.
  advertised_host = var.advertised_host != "" ? var.advertised_host : (var.public_address ? aws_eip.broker[0].public_ip : "")

  # Of the data volume: 40% for the WAL (what piles up while the bucket is away), 40% for
  # cached blocks of cold objects, the rest for metadata and headroom.
  wal_disk_bytes_max = floor(var.data_volume_gib * 0.4) * 1073741824
  cache_disk_bytes   = floor(var.data_volume_gib * 0.4) * 1073741824

  # Every value the bootstrap template uses (tests/deploy renders it with these keys).
  bootstrap_vars = {
    region             = var.region
    object_store_url   = local.object_store_url
    binary_url         = local.binary_is_url ? var.binary_source : ""
    binary_s3_uri      = local.binary_is_url ? "" : "s3://${var.bucket_name}/${local.binary_key}"
    binary_sha256      = local.binary_sha256
    data_volume_id     = aws_ebs_volume.data.id
    kafka_port         = var.kafka_port
    admin_port         = var.admin_port
    advertised_host    = local.advertised_host
    admin_token        = var.admin_token
    cache_memory_bytes = var.cache_memory_bytes
    cache_disk_bytes   = local.cache_disk_bytes
    wal_disk_bytes_max = local.wal_disk_bytes_max
    wal_segment_ms     = var.wal_segment_ms
    log_filter         = var.log_filter
    service_unit       = file("${path.module}/../deploy/strata.service")
  }
}

# ---------------------------------------------------------------------------- the bucket

resource "aws_s3_bucket" "broker" {
  # checkov:skip=CKV_AWS_21:Versioning keeps every object retention deletes; docs/operations.md (Backups) says when to turn it on
  # checkov:skip=CKV_AWS_144:Cross-region replication is a backup choice of the operator (docs/operations.md, Backups)
  # checkov:skip=CKV_AWS_145:SSE-S3 encrypts at rest without a KMS key and its per-request cost
  # checkov:skip=CKV_AWS_18:Access logging would need a second bucket; CloudTrail data events can be enabled instead
  # checkov:skip=CKV2_AWS_62:Nothing consumes event notifications of the broker's objects
  bucket        = var.bucket_name
  force_destroy = var.force_destroy_bucket
}

resource "aws_s3_bucket_ownership_controls" "broker" {
  bucket = aws_s3_bucket.broker.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "broker" {
  bucket                  = aws_s3_bucket.broker.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "broker" {
  bucket = aws_s3_bucket.broker.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# An upload the broker did not finish (a crash mid-multipart) leaves parts that cost money and
# that no listing shows: S3 drops them after a day.
resource "aws_s3_bucket_lifecycle_configuration" "broker" {
  bucket = aws_s3_bucket.broker.id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.broker.arn, "${aws_s3_bucket.broker.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "broker" {
  bucket     = aws_s3_bucket.broker.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.broker]
}

# A local binary goes to the bucket, outside the broker's prefix, for the bootstrap to fetch.
resource "aws_s3_object" "binary" {
  count       = local.binary_is_url ? 0 : 1
  bucket      = aws_s3_bucket.broker.id
  key         = local.binary_key
  source      = var.binary_source
  source_hash = local.binary_sha256
  depends_on  = [aws_s3_bucket_server_side_encryption_configuration.broker]
}

# ------------------------------------------------------------------------------ IAM

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# Exactly the operations the broker sends, on its prefix only:
#   GetObject             cold reads (ranged GET), segment footers, the metadata snapshot
#   PutObject             segment objects (single PUT, and multipart: Create/UploadPart/Complete),
#                         the metadata snapshot
#   AbortMultipartUpload  a multipart upload that failed half-way
#   DeleteObject          retention, DeleteRecords and DeleteTopics
#   ListBucket            the start-up check and the restore of an empty data directory
data "aws_iam_policy_document" "broker" {
  statement {
    sid = "BrokerObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
    ]
    resources = ["${aws_s3_bucket.broker.arn}/${var.bucket_prefix}/*"]
  }

  statement {
    sid       = "ListBrokerPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.broker.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.bucket_prefix}/*"]
    }
  }

  dynamic "statement" {
    for_each = local.binary_is_url ? [] : [local.binary_key]
    content {
      sid       = "BootstrapBinary"
      actions   = ["s3:GetObject"]
      resources = ["${aws_s3_bucket.broker.arn}/${statement.value}"]
    }
  }
}

resource "aws_iam_role" "broker" {
  name_prefix        = "${var.name}-broker-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "broker" {
  name   = "strata-objects"
  role   = aws_iam_role.broker.id
  policy = data.aws_iam_policy_document.broker.json
}

# Shell access through SSM Session Manager, so that SSH can stay closed.
resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.broker.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "broker" {
  name_prefix = "${var.name}-broker-"
  role        = aws_iam_role.broker.name
}

# -------------------------------------------------------------------------- network

data "aws_vpc" "default" {
  count   = var.subnet_id == "" ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = var.subnet_id == "" ? 1 : 0
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }
  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

data "aws_subnet" "broker" {
  id = local.subnet_id
}

resource "aws_security_group" "broker" {
  name_prefix = "${var.name}-broker-"
  description = "strata: Kafka and admin ports for the allowed CIDRs"
  vpc_id      = data.aws_subnet.broker.vpc_id

  ingress {
    description = "Kafka"
    from_port   = var.kafka_port
    to_port     = var.kafka_port
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }

  ingress {
    description = "strata admin API (token required)"
    from_port   = var.admin_port
    to_port     = var.admin_port
    protocol    = "tcp"
    cidr_blocks = local.admin_cidrs
  }

  dynamic "ingress" {
    for_each = length(var.ssh_allowed_cidrs) > 0 ? [var.ssh_allowed_cidrs] : []
    content {
      description = "SSH"
      from_port   = 22
      to_port     = 22
      protocol    = "tcp"
      cidr_blocks = ingress.value
    }
  }

  # HTTPS only: S3, the package mirrors, SSM and (for an https:// binary_source) the binary's
  # host. DNS, NTP and instance metadata go to link-local addresses no security group filters.
  egress {
    description = "HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_eip" "broker" {
  count  = var.public_address ? 1 : 0
  domain = "vpc"
}

resource "aws_eip_association" "broker" {
  count         = var.public_address ? 1 : 0
  allocation_id = aws_eip.broker[0].id
  instance_id   = aws_instance.broker.id
}

# ------------------------------------------------------------------------- instance

data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == "" ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

resource "aws_ebs_volume" "data" {
  # checkov:skip=CKV_AWS_189:Encrypted with the account's default EBS key; a customer managed key is the operator's choice
  availability_zone = data.aws_subnet.broker.availability_zone
  size              = var.data_volume_gib
  type              = var.data_volume_type
  encrypted         = true
  tags = {
    Name = "${var.name}-data"
  }
}

resource "aws_instance" "broker" {
  # checkov:skip=CKV_AWS_126:Detailed (1-minute) monitoring costs extra; the broker exports its own metrics at /metrics
  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = local.subnet_id
  vpc_security_group_ids      = [aws_security_group.broker.id]
  iam_instance_profile        = aws_iam_instance_profile.broker.name
  key_name                    = var.key_name
  ebs_optimized               = true
  user_data                   = templatefile("${path.module}/user-data.sh.tftpl", local.bootstrap_vars)
  user_data_replace_on_change = true

  # IMDSv2 only; the broker's AWS SDK uses session tokens.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = var.root_volume_gib
    volume_type = "gp3"
    encrypted   = true
  }

  # A newer Amazon Linux image alone does not replace a running broker.
  lifecycle {
    ignore_changes = [ami]
  }

  depends_on = [aws_s3_object.binary, aws_iam_role_policy.broker]
}

# The instance is stopped (the broker gets SIGTERM and syncs its WAL) before the volume is
# detached, e.g. when an upgrade replaces the instance.
resource "aws_volume_attachment" "data" {
  device_name                    = "/dev/sdf"
  volume_id                      = aws_ebs_volume.data.id
  instance_id                    = aws_instance.broker.id
  stop_instance_before_detaching = true
}
