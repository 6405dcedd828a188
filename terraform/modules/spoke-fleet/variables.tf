variable "name" {
  description = "The fleet's name, the prefix of its resources and of its spokes' names (each spoke is <name>-<instance id>), such as \"fra\"."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2 to 21 characters of a-z, 0-9 and -, starting with a letter."
  }
}

variable "vpc_id" {
  description = "region-network's vpc_id."
  type        = string
}

variable "subnet_ids" {
  description = "region-network's subnet_ids: the fleet spreads across their zones."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "Give subnets in at least two zones."
  }
}

variable "security_group_id" {
  description = "region-network's spoke_security_group_id."
  type        = string
}

variable "ami_id" {
  description = "Debian 12 AMI for the instance type's architecture."
  type        = string
  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the spokes."
  type        = string
  default     = "c7gn.large"
}

variable "min_size" {
  description = "Fewest spokes."
  type        = number
  default     = 2
  validation {
    condition     = var.min_size >= 1
    error_message = "min_size must be at least 1."
  }
}

variable "max_size" {
  description = "Most spokes."
  type        = number
  default     = 6
  validation {
    condition     = var.max_size >= 1 && var.max_size <= 100
    error_message = "max_size must be from 1 to 100."
  }
}

variable "desired_capacity" {
  description = "Spokes to run now (between min_size and max_size)."
  type        = number
  default     = 2
}

variable "api_port" {
  description = "The spokes' HTTPS port ([api] listen), also health-checked on /readyz."
  type        = number
  default     = 443
  validation {
    condition     = var.api_port > 0 && var.api_port < 65536
    error_message = "api_port must be a port number."
  }
}

variable "package_url" {
  description = "HTTPS URL of the ferry-spoke .deb to install."
  type        = string
  validation {
    condition     = can(regex("^https://.+\\.deb$", var.package_url))
    error_message = "package_url must be an https:// URL of a .deb."
  }
}

variable "config_toml" {
  description = "The spokes' configuration (spoke.toml). @NAME@ becomes each spoke's name and @PUBLIC_IP@ its public address at boot."
  type        = string
  validation {
    condition     = strcontains(var.config_toml, "@NAME@")
    error_message = "config_toml must use @NAME@ for the spoke's name (name = \"@NAME@\")."
  }
}

variable "parameter_prefix" {
  description = "SSM Parameter Store path of the fleet's enrolment token (<prefix>/fleet-token, a SecureString): a fleet token from `ferry-hub spoke fleet add <name>`, which enrols each new spoke as <name>-<instance id> and nothing else."
  type        = string
  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+[^/]$", var.parameter_prefix))
    error_message = "parameter_prefix must be an absolute parameter path without a trailing slash."
  }
}

variable "parameters_kms_key_arn" {
  description = "KMS key the SecureString parameter is encrypted with."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
