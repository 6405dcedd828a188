variable "name" {
  description = "Name prefix of every resource, such as \"ferry-fra\"."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2 to 31 characters of a-z, 0-9 and -, starting with a letter."
  }
}

variable "cidr_block" {
  description = "The VPC's IPv4 range, such as 10.20.0.0/16."
  type        = string
  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) <= 22
    error_message = "cidr_block must be an IPv4 CIDR of /22 or larger."
  }
}

variable "availability_zones" {
  description = "Zones to make one public subnet in each (at least two, for the spoke fleet)."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "Give at least two availability zones."
  }
}

variable "tunnel_port" {
  description = "The hubs' tunnel port: QUIC on UDP and TLS on TCP (tunnel.listen)."
  type        = number
  default     = 7443
  validation {
    condition     = var.tunnel_port > 0 && var.tunnel_port < 65536
    error_message = "tunnel_port must be a port number."
  }
}

variable "api_port" {
  description = "The HTTPS port of hubs and spokes ([api] listen)."
  type        = number
  default     = 443
  validation {
    condition     = var.api_port > 0 && var.api_port < 65536
    error_message = "api_port must be a port number."
  }
}

variable "client_cidrs" {
  description = "Networks allowed to reach the API and the steering DNS (the world, by default)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  validation {
    condition     = alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must be IPv4 CIDRs."
  }
}

variable "spoke_cidrs" {
  description = "Networks spokes connect to hubs from (every region's VPC, or the world when spokes use public addresses)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  validation {
    condition     = alltrue([for c in var.spoke_cidrs : can(cidrhost(c, 0))])
    error_message = "spoke_cidrs must be IPv4 CIDRs."
  }
}

variable "metrics_port" {
  description = "The operator port of hubs and spokes ([metrics] listen): /metrics, /healthz, /readyz. Open only to operator_cidrs."
  type        = number
  default     = 9460
  validation {
    condition     = var.metrics_port > 0 && var.metrics_port < 65536
    error_message = "metrics_port must be a port number."
  }
}

variable "operator_cidrs" {
  description = "Networks allowed to reach the metrics port (the Prometheus servers); none by default, and never the world."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.operator_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "operator_cidrs must be IPv4 CIDRs narrower than /0: the metrics port is not for the world."
  }
}

variable "flow_log_retention_days" {
  description = "How long VPC flow logs are kept."
  type        = number
  default     = 365
  validation {
    condition     = contains([365, 400, 545, 731, 1827, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be one of CloudWatch's values of a year or more: 365, 400, 545, 731, 1827, 3653."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
