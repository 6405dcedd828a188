# One region's network for ferry: a VPC with a public subnet per zone, and
# security groups that open exactly what ferry listens on: the tunnel
# (UDP and TCP) and DNS (UDP and TCP) on hubs, HTTPS on hubs and spokes.

resource "aws_vpc" "this" {
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = var.name })
}

# Nothing may use the default security group.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-default-closed" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count             = length(var.availability_zones)
  vpc_id            = aws_vpc.this.id
  availability_zone = var.availability_zones[count.index]
  cidr_block        = cidrsubnet(var.cidr_block, 4, count.index)
  # Addresses come from the launch templates and elastic IPs, not the subnet.
  map_public_ip_on_launch = false
  tags                    = merge(var.tags, { Name = "${var.name}-public-${var.availability_zones[count.index]}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route_table_association" "public" {
  count          = length(aws_subnet.public)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# Flow logs, encrypted, kept a year.
data "aws_region" "current" {}

module "logs_key" {
  source             = "../kms-key"
  description        = "${var.name}: VPC flow logs"
  service_principals = ["logs.${data.aws_region.current.name}.amazonaws.com"]
  tags               = var.tags
}

resource "aws_cloudwatch_log_group" "flow" {
  name              = "/ferry/${var.name}/vpc-flow"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = module.logs_key.arn
  tags              = var.tags
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-vpc-flow"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "flow" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn
  tags            = var.tags
}

# --- Security groups -------------------------------------------------------

resource "aws_security_group" "hub" {
  #checkov:skip=CKV2_AWS_5:Attached to the hub instance by the hub module
  name        = "${var.name}-hub"
  description = "ferry hubs: HTTPS API, spoke tunnels (QUIC and TLS), steering DNS, metrics to operators"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-hub" })
}

resource "aws_security_group" "spoke" {
  #checkov:skip=CKV2_AWS_5:Attached to the spoke launch template by the spoke-fleet module
  name        = "${var.name}-spoke"
  description = "ferry spokes: HTTPS API, metrics to operators"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-spoke" })
}

resource "aws_vpc_security_group_ingress_rule" "hub_api" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.hub.id
  description       = "HTTPS API from clients"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "hub_tunnel_udp" {
  for_each          = toset(var.spoke_cidrs)
  security_group_id = aws_security_group.hub.id
  description       = "Spoke tunnels over QUIC"
  ip_protocol       = "udp"
  from_port         = var.tunnel_port
  to_port           = var.tunnel_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "hub_tunnel_tcp" {
  for_each          = toset(var.spoke_cidrs)
  security_group_id = aws_security_group.hub.id
  description       = "Spoke tunnels over TLS on TCP, where UDP is blocked"
  ip_protocol       = "tcp"
  from_port         = var.tunnel_port
  to_port           = var.tunnel_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "hub_dns_udp" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.hub.id
  description       = "Steering DNS over UDP from resolvers"
  ip_protocol       = "udp"
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "hub_dns_tcp" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.hub.id
  description       = "Steering DNS over TCP from resolvers"
  ip_protocol       = "tcp"
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "spoke_api" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.spoke.id
  description       = "HTTPS API from clients (and the load balancer's health checks)"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.value
}

# The operator port (/metrics): the Prometheus servers only, never the world.
resource "aws_vpc_security_group_ingress_rule" "hub_metrics" {
  for_each          = toset(var.operator_cidrs)
  security_group_id = aws_security_group.hub.id
  description       = "Metrics (the operator listener) from the operators' Prometheus"
  ip_protocol       = "tcp"
  from_port         = var.metrics_port
  to_port           = var.metrics_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "spoke_metrics" {
  for_each          = toset(var.operator_cidrs)
  security_group_id = aws_security_group.spoke.id
  description       = "Metrics (the operator listener) from the operators' Prometheus"
  ip_protocol       = "tcp"
  from_port         = var.metrics_port
  to_port           = var.metrics_port
  cidr_ipv4         = each.value
}

# Out: storage providers, hubs, the parameter store, package mirrors, NTP.
resource "aws_vpc_security_group_egress_rule" "hub_out" {
  security_group_id = aws_security_group.hub.id
  description       = "Providers, PostgreSQL, the parameter store, packages"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "spoke_out" {
  security_group_id = aws_security_group.spoke.id
  description       = "Providers, the hubs' tunnels, the parameter store, packages"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}
