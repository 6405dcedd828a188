terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }
}

# One provider per region, by alias: the hub's region and two spoke regions.
provider "aws" {
  alias  = "fra"
  region = "eu-central-1"
}

provider "aws" {
  alias  = "iad"
  region = "us-east-1"
}

provider "aws" {
  alias  = "sin"
  region = "ap-southeast-1"
}
