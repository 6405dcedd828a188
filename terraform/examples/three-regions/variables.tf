variable "domain" {
  description = "The parent domain, hosted in Route 53 (the steering zone is edge.<domain>)."
  type        = string
  default     = "example.com"
}

variable "parent_zone_id" {
  description = "The Route 53 hosted zone of var.domain."
  type        = string
}

variable "amis" {
  description = "A Debian 12 arm64 AMI in each region, by region alias (fra, iad, sin)."
  type        = map(string)
  validation {
    condition     = alltrue([for r in ["fra", "iad", "sin"] : contains(keys(var.amis), r)])
    error_message = "amis needs an entry for each of fra, iad and sin."
  }
}

variable "hub_package_url" {
  description = "HTTPS URL of the ferry-hub .deb."
  type        = string
}

variable "spoke_package_url" {
  description = "HTTPS URL of the ferry-spoke .deb."
  type        = string
}

variable "spokes_per_region" {
  description = "Spokes each spoke region runs."
  type        = number
  default     = 2
  validation {
    condition     = var.spokes_per_region >= 1 && var.spokes_per_region <= 20
    error_message = "spokes_per_region must be from 1 to 20."
  }
}

variable "operator_cidrs" {
  description = "Networks of the Prometheus servers that scrape hubs and spokes on port 9460; none by default."
  type        = list(string)
  default     = []
}
