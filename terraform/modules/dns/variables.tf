variable "parent_zone_id" {
  description = "Route 53 hosted zone of the parent domain (example.com), where the steering zone is delegated."
  type        = string
}

variable "steering_zone" {
  description = "The steering zone the hubs answer (dns.zone), inside the parent zone, such as edge.example.com."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.steering_zone))
    error_message = "steering_zone must be a DNS name such as edge.example.com."
  }
}

variable "hubs" {
  description = "Every hub's name server: a name in the parent zone (dns.nameservers lists the same) and the hub's public IPv4 address."
  type = list(object({
    name_server = string
    address     = string
  }))
  validation {
    condition     = length(var.hubs) >= 1 && alltrue([for h in var.hubs : can(cidrhost("${h.address}/32", 0))])
    error_message = "Give at least one hub, each with an IPv4 address."
  }
}

variable "ttl" {
  description = "TTL of the delegation and the name servers' addresses, in seconds."
  type        = number
  default     = 3600
  validation {
    condition     = var.ttl >= 60 && var.ttl <= 172800
    error_message = "ttl must be from 60 to 172800."
  }
}
