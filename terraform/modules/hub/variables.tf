variable "name" {
  description = "The hub's name, used for its resources and its parameters, such as \"ferry-hub-fra\"."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2 to 31 characters of a-z, 0-9 and -, starting with a letter."
  }
}

variable "subnet_id" {
  description = "Subnet the hub runs in (one of region-network's subnet_ids)."
  type        = string
}

variable "security_group_id" {
  description = "region-network's hub_security_group_id."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the hub."
  type        = string
  default     = "c7g.large"
}

variable "ami_id" {
  description = "Debian 12 AMI for the instance's architecture (the package is built for it)."
  type        = string
  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "package_url" {
  description = "HTTPS URL of the ferry-hub .deb to install (built by scripts/build-deb.sh and published where instances can fetch it)."
  type        = string
  validation {
    condition     = can(regex("^https://.+\\.deb$", var.package_url))
    error_message = "package_url must be an https:// URL of a .deb."
  }
}

variable "state_volume_size_gib" {
  description = "Size of the persistent volume mounted at /var/lib/ferry (the SQLite store and the tunnel CA, or with PostgreSQL little)."
  type        = number
  default     = 20
  validation {
    condition     = var.state_volume_size_gib >= 1 && var.state_volume_size_gib <= 16384
    error_message = "state_volume_size_gib must be from 1 to 16384."
  }
}

variable "config_toml" {
  description = "The hub's configuration (hub.toml), written to /etc/ferry/hub.toml; @PUBLIC_IP@ becomes the hub's elastic IP (for tunnel.public_addr and dns.hub_addrs). Keep secrets out of it: they come from the parameters below."
  type        = string
  validation {
    condition     = length(var.config_toml) > 0 && !can(regex("(?i)master_key\\s*=|password\\s*=", var.config_toml))
    error_message = "config_toml must not be empty and must not hold a master key or a password."
  }
}

variable "parameter_prefix" {
  description = "SSM Parameter Store path holding the hub's secrets as SecureStrings: <prefix>/master-key, <prefix>/admin-token and, with PostgreSQL, <prefix>/store-password."
  type        = string
  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+[^/]$", var.parameter_prefix))
    error_message = "parameter_prefix must be an absolute parameter path without a trailing slash, such as /ferry/fra."
  }
}

variable "parameters_kms_key_arn" {
  description = "KMS key the SecureString parameters are encrypted with (the hub may decrypt with it)."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
