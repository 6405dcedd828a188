output "hub_address" {
  description = "The Frankfurt hub's public address."
  value       = module.hub_fra.public_ip
}

output "api_name" {
  description = "What applications use as the API's host: DNS steers each client to its nearest spoke."
  value       = module.dns.api_name
}

output "spoke_regions" {
  description = "Each spoke region's load balancer (its spokes' health checks, and a stable regional address)."
  value = {
    iad = module.spokes_iad.load_balancer_dns_name
    sin = module.spokes_sin.load_balancer_dns_name
  }
}
