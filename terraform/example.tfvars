# cp example.tfvars strata.tfvars; edit; terraform apply -var-file=strata.tfvars
region        = "eu-west-1"
instance_type = "m7i.large"
bucket_name   = "my-company-strata"
allowed_cidrs = ["203.0.113.0/24"]
# A binary built with `cargo build --release` (terraform uploads it to the bucket), or an
# https:// URL together with binary_sha256.
binary_source   = "../target/release/strata"
data_volume_gib = 100
