variable "description" {
  description = "What the key encrypts, shown in KMS."
  type        = string
  validation {
    condition     = length(var.description) > 0
    error_message = "description must not be empty."
  }
}

variable "alias" {
  description = "An alias for the key, such as \"alias/ferry-parameters\" (none by default)."
  type        = string
  default     = null
  validation {
    condition     = var.alias == null || can(regex("^alias/[A-Za-z0-9/_-]+$", var.alias))
    error_message = "alias must look like alias/ferry-parameters."
  }
}

variable "service_principals" {
  description = "AWS services (such as logs.eu-central-1.amazonaws.com) that may encrypt and decrypt with the key."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for the key."
  type        = map(string)
  default     = {}
}
