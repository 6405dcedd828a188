output "name_servers" {
  description = "The steering zone's name servers, for every hub's dns.nameservers."
  value       = [for h in var.hubs : h.name_server]
}

output "api_name" {
  description = "The name applications use: api.<steering zone>."
  value       = "api.${var.steering_zone}"
}
