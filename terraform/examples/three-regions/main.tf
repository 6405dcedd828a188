# ferry in three regions: a hub in Frankfurt (SQLite store, the steering
# DNS), spoke fleets in Virginia and Singapore tunnelling to it, and the
# steering zone edge.<domain> delegated to the hub in Route 53.
#
# Before `terraform apply`, put the secrets in the parameter store (they
# never pass through Terraform's state):
#   aws --region eu-central-1 ssm put-parameter --type SecureString \
#     --key-id alias/ferry-parameters --name /ferry/fra/master-key --value "$(head -c 32 /dev/urandom | base64)"
#   aws --region eu-central-1 ssm put-parameter --type SecureString \
#     --key-id alias/ferry-parameters --name /ferry/fra/admin-token --value "$(head -c 32 /dev/urandom | base64)"
#   and, for each spoke region, a fleet token made on the hub
#   (`ferry-hub --config /etc/ferry/hub.toml spoke fleet add iad
#   --public-addr <the networks its instances' public addresses lie in>`) as
#   /ferry/iad/fleet-token in us-east-1, and `... fleet add sin` as
#   /ferry/sin/fleet-token in ap-southeast-1, each with that region's key.
# The parameter keys are made by this configuration: apply once with
# -target=module.parameters_key_fra (and _iad, _sin) first.

locals {
  zone = "edge.${var.domain}"
  tags = { project = "ferry" }
}

# --- Keys for the parameter store, one per region --------------------------

module "parameters_key_fra" {
  source      = "../../modules/kms-key"
  providers   = { aws = aws.fra }
  description = "ferry: SecureString parameters"
  alias       = "alias/ferry-parameters"
  tags        = local.tags
}

module "parameters_key_iad" {
  source      = "../../modules/kms-key"
  providers   = { aws = aws.iad }
  description = "ferry: SecureString parameters"
  alias       = "alias/ferry-parameters"
  tags        = local.tags
}

module "parameters_key_sin" {
  source      = "../../modules/kms-key"
  providers   = { aws = aws.sin }
  description = "ferry: SecureString parameters"
  alias       = "alias/ferry-parameters"
  tags        = local.tags
}

# --- Networks --------------------------------------------------------------

module "network_fra" {
  source             = "../../modules/region-network"
  providers          = { aws = aws.fra }
  name               = "ferry-fra"
  cidr_block         = "10.10.0.0/16"
  availability_zones = ["eu-central-1a", "eu-central-1b"]
  operator_cidrs     = var.operator_cidrs
  tags               = local.tags
}

module "network_iad" {
  source             = "../../modules/region-network"
  providers          = { aws = aws.iad }
  name               = "ferry-iad"
  cidr_block         = "10.20.0.0/16"
  availability_zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
  operator_cidrs     = var.operator_cidrs
  tags               = local.tags
}

module "network_sin" {
  source             = "../../modules/region-network"
  providers          = { aws = aws.sin }
  name               = "ferry-sin"
  cidr_block         = "10.30.0.0/16"
  availability_zones = ["ap-southeast-1a", "ap-southeast-1b"]
  operator_cidrs     = var.operator_cidrs
  tags               = local.tags
}

# --- The hub ---------------------------------------------------------------

module "hub_fra" {
  source                 = "../../modules/hub"
  providers              = { aws = aws.fra }
  name                   = "ferry-hub-fra"
  subnet_id              = module.network_fra.subnet_ids[0]
  security_group_id      = module.network_fra.hub_security_group_id
  ami_id                 = var.amis["fra"]
  package_url            = var.hub_package_url
  parameter_prefix       = "/ferry/fra"
  parameters_kms_key_arn = module.parameters_key_fra.arn
  tags                   = local.tags
  config_toml            = <<-TOML
    state_dir = "/var/lib/ferry"

    [api]
    listen = "0.0.0.0:443"

    [api.tls]
    cert_file = "/etc/ferry/tls/fullchain.pem"
    key_file = "/etc/ferry/tls/privkey.pem"

    [metrics]
    listen = "0.0.0.0:9460"

    [tunnel]
    listen = "0.0.0.0:7443"
    public_addr = "@PUBLIC_IP@:7443"

    [dns]
    listen = "0.0.0.0:53"
    zone = "${local.zone}"
    hub_addrs = ["@PUBLIC_IP@"]
    nameservers = ["ns-fra.${var.domain}"]

    [secrets]
    master_key_env = "FERRY_MASTER_KEY"

    [providers.remote]
    enabled = ["s3", "azblob", "gcs", "webdav"]
  TOML
}

# --- Spoke fleets ----------------------------------------------------------

locals {
  spoke_config = <<-TOML
    name = "@NAME@"
    state_dir = "/var/lib/ferry-spoke"

    [api]
    listen = "0.0.0.0:443"

    [api.tls]
    cert_file = "/etc/ferry/tls/fullchain.pem"
    key_file = "/etc/ferry/tls/privkey.pem"

    [metrics]
    listen = "0.0.0.0:9460"

    [hub]
    api_url = "https://hub.${local.zone}"
    tunnel_addr = "${module.hub_fra.public_ip}:7443"

    [steering]
    public_addrs = ["@PUBLIC_IP@"]
  TOML
}

module "spokes_iad" {
  source                 = "../../modules/spoke-fleet"
  providers              = { aws = aws.iad }
  name                   = "iad"
  vpc_id                 = module.network_iad.vpc_id
  subnet_ids             = module.network_iad.subnet_ids
  security_group_id      = module.network_iad.spoke_security_group_id
  ami_id                 = var.amis["iad"]
  package_url            = var.spoke_package_url
  config_toml            = local.spoke_config
  parameter_prefix       = "/ferry/iad"
  parameters_kms_key_arn = module.parameters_key_iad.arn
  min_size               = var.spokes_per_region
  desired_capacity       = var.spokes_per_region
  max_size               = var.spokes_per_region * 3
  tags                   = local.tags
}

module "spokes_sin" {
  source                 = "../../modules/spoke-fleet"
  providers              = { aws = aws.sin }
  name                   = "sin"
  vpc_id                 = module.network_sin.vpc_id
  subnet_ids             = module.network_sin.subnet_ids
  security_group_id      = module.network_sin.spoke_security_group_id
  ami_id                 = var.amis["sin"]
  package_url            = var.spoke_package_url
  config_toml            = local.spoke_config
  parameter_prefix       = "/ferry/sin"
  parameters_kms_key_arn = module.parameters_key_sin.arn
  min_size               = var.spokes_per_region
  desired_capacity       = var.spokes_per_region
  max_size               = var.spokes_per_region * 3
  tags                   = local.tags
}

# --- DNS -------------------------------------------------------------------

module "dns" {
  source         = "../../modules/dns"
  providers      = { aws = aws.iad }
  parent_zone_id = var.parent_zone_id
  steering_zone  = local.zone
  hubs = [
    { name_server = "ns-fra.${var.domain}", address = module.hub_fra.public_ip },
  ]
}
