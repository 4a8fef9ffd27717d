variable "region" {
  description = "AWS region for the bucket and the instance."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name of the deployment: prefixes the IAM role, security group and instance names."
  type        = string
  default     = "strata"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,30}$", var.name))
    error_message = "The name must start with a letter and hold at most 31 letters, digits or dashes."
  }
}

variable "instance_type" {
  description = "EC2 instance type. Pick the architecture to match: arm64 types (m7g, c7g ...) need an aarch64 strata binary and architecture = \"arm64\"."
  type        = string
  default     = "m7i.large"
}

variable "architecture" {
  description = "CPU architecture of the instance type and of the strata binary: x86_64 or arm64."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "The architecture must be x86_64 or arm64."
  }
}

variable "ami_id" {
  description = "AMI for the instance. Empty: the latest Amazon Linux 2023 for the architecture."
  type        = string
  default     = ""
}

variable "subnet_id" {
  description = "Subnet for the instance. Empty: a default subnet of the region's default VPC."
  type        = string
  default     = ""
}

variable "allowed_cidrs" {
  description = "CIDR blocks that may reach the Kafka port (the producers and consumers)."
  type        = list(string)

  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "Give at least one CIDR block, e.g. [\"203.0.113.0/24\"]."
  }
}

variable "admin_allowed_cidrs" {
  description = "CIDR blocks that may reach the admin HTTP API (metrics, health, indexer). Null: the same as allowed_cidrs. The API always asks for the admin token."
  type        = list(string)
  default     = null
}

variable "ssh_allowed_cidrs" {
  description = "CIDR blocks that may reach SSH (port 22). Empty: SSH stays closed; use SSM Session Manager instead."
  type        = list(string)
  default     = []
}

variable "key_name" {
  description = "EC2 key pair for SSH. Null: none."
  type        = string
  default     = null
}

variable "bucket_name" {
  description = "Name of the S3 bucket that this deployment creates for the broker's objects."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "The bucket name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots and dashes)."
  }
}

variable "bucket_prefix" {
  description = "Key prefix of the broker's objects in the bucket; the IAM policy allows only keys under it."
  type        = string
  default     = "strata"

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9._-]*(/[a-zA-Z0-9._-]+)*$", var.bucket_prefix))
    error_message = "The prefix must be non-empty, without leading or trailing slashes (e.g. \"strata\" or \"prod/strata\")."
  }
}

variable "force_destroy_bucket" {
  description = "Let `terraform destroy` delete the bucket with every object in it. Keep false in production."
  type        = bool
  default     = false
}

variable "binary_source" {
  description = "Where the instance gets the strata binary: an https:// URL (give binary_sha256 too), or the path of a local file (e.g. target/release/strata), which terraform uploads to the bucket under bootstrap/."
  type        = string

  validation {
    condition     = length(var.binary_source) > 0
    error_message = "Set binary_source to an https:// URL or the path of a built strata binary."
  }
}

variable "binary_sha256" {
  description = "SHA-256 of the binary, checked by the bootstrap before installing it. Required for an https:// binary_source; computed for a local file."
  type        = string
  default     = ""

  validation {
    condition     = var.binary_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "kafka_port" {
  description = "TCP port of the Kafka listener."
  type        = number
  default     = 9092
}

variable "admin_port" {
  description = "TCP port of the admin HTTP API."
  type        = number
  default     = 9080
}

variable "advertised_host" {
  description = "Host name or address that clients are told to connect to. Empty: the Elastic IP when public_address is true, else the instance's private IP."
  type        = string
  default     = ""
}

variable "public_address" {
  description = "Give the instance an Elastic IP (stable across stop/start) and advertise it. False: advertise the private IP (clients in the VPC or a peered network)."
  type        = bool
  default     = true
}

variable "admin_token" {
  description = "Token the admin API asks for (STRATA_ADMIN_TOKEN). Empty: the bootstrap generates one on the instance and keeps it only in /etc/strata/strata.toml (readable by root)."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9._~+/=-]*$", var.admin_token))
    error_message = "The admin token may hold letters, digits and ._~+/=- only."
  }
}

variable "data_volume_gib" {
  description = "Size of the EBS data volume for the WAL, metadata and the block cache, in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.data_volume_gib >= 20
    error_message = "The data volume needs at least 20 GiB (WAL budget plus block cache)."
  }
}

variable "data_volume_type" {
  description = "EBS volume type of the data volume. gp3 gives 3000 IOPS and 125 MB/s at any size."
  type        = string
  default     = "gp3"
}

variable "root_volume_gib" {
  description = "Size of the root volume in GiB (the OS and the binary only)."
  type        = number
  default     = 16
}

variable "cache_memory_bytes" {
  description = "Memory for cached blocks of cold objects (--cache-memory-bytes)."
  type        = number
  default     = 1073741824
}

variable "wal_segment_ms" {
  description = "Age at which the active WAL segment is sealed and uploaded (--wal-segment-ms): with the upload time, how long acknowledged records live only on the data volume."
  type        = number
  default     = 60000
}

variable "log_filter" {
  description = "Log filter of the broker (--log), e.g. info or strata=debug."
  type        = string
  default     = "info"
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
