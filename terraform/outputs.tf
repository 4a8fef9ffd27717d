output "bootstrap_servers" {
  description = "Kafka bootstrap address for clients (bootstrap.servers)."
  value       = "${local.advertised_host != "" ? local.advertised_host : aws_instance.broker.private_ip}:${var.kafka_port}"
}

output "admin_url" {
  description = "Base URL of the admin HTTP API (/health/ready, /metrics, /v1/...). It asks for the admin token."
  value       = "http://${local.advertised_host != "" ? local.advertised_host : aws_instance.broker.private_ip}:${var.admin_port}"
}

output "bucket_name" {
  description = "The broker's bucket."
  value       = aws_s3_bucket.broker.id
}

output "object_store_url" {
  description = "The broker's --object-store setting."
  value       = local.object_store_url
}

output "instance_id" {
  description = "The broker's instance (for SSM Session Manager: aws ssm start-session --target ID)."
  value       = aws_instance.broker.id
}

output "admin_token_hint" {
  description = "Where the admin token is."
  value       = var.admin_token != "" ? "the admin_token variable" : "generated on the instance: sudo grep admin_token /etc/strata/strata.toml"
}
