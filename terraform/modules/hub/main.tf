# A ferry hub: one instance with a persistent, encrypted state volume, an
# elastic IP (the address spokes and resolvers use), an instance role that
# may read its own parameters only, and cloud-init that installs the
# package, writes the configuration and the secrets, and starts the unit.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_subnet" "this" {
  id = var.subnet_id
}

# --- Identity: read this hub's parameters, nothing else --------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "parameters" {
  statement {
    sid       = "ReadOwnParameters"
    actions   = ["ssm:GetParameter", "ssm:GetParameters"]
    resources = ["arn:aws:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${var.parameter_prefix}/*"]
  }
  statement {
    sid       = "DecryptThem"
    actions   = ["kms:Decrypt"]
    resources = [var.parameters_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "parameters" {
  name   = "read-own-parameters"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.parameters.json
}

resource "aws_iam_instance_profile" "this" {
  name = var.name
  role = aws_iam_role.this.name
  tags = var.tags
}

# --- Storage ---------------------------------------------------------------

module "state_key" {
  source      = "../kms-key"
  description = "${var.name}: the hub's state volume"
  tags        = var.tags
}

resource "aws_ebs_volume" "state" {
  availability_zone = data.aws_subnet.this.availability_zone
  size              = var.state_volume_size_gib
  type              = "gp3"
  encrypted         = true
  kms_key_id        = module.state_key.arn
  tags              = merge(var.tags, { Name = "${var.name}-state" })
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_volume_attachment" "state" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.state.id
  instance_id = aws_instance.this.id
}

# --- The instance ----------------------------------------------------------

resource "aws_instance" "this" {
  #checkov:skip=CKV_AWS_88:A hub is reached by spokes and resolvers at its public address (an elastic IP)
  ami                         = var.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [var.security_group_id]
  iam_instance_profile        = aws_iam_instance_profile.this.name
  associate_public_ip_address = true
  monitoring                  = true
  ebs_optimized               = true
  user_data_replace_on_change = true
  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    package_url      = var.package_url
    config_toml      = replace(var.config_toml, "@PUBLIC_IP@", aws_eip.this.public_ip)
    parameter_prefix = var.parameter_prefix
    region           = data.aws_region.current.name
  })

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = 16
  }

  tags = merge(var.tags, { Name = var.name })
}

# Allocated before the instance, so the configuration can name it.
resource "aws_eip" "this" {
  domain = "vpc"
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_eip_association" "this" {
  allocation_id = aws_eip.this.id
  instance_id   = aws_instance.this.id
}
