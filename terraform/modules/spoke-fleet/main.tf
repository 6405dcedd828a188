# A region's spoke fleet: an auto-scaling group across zones, each
# instance enrolling itself with the hub at first boot, replaced when its
# /readyz fails (checked through a network load balancer's target group,
# which also gives the region one stable TCP address for its spokes).

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

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
  name               = "ferry-spokes-${var.name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "parameters" {
  statement {
    sid       = "ReadFleetToken"
    actions   = ["ssm:GetParameter"]
    resources = ["arn:aws:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${var.parameter_prefix}/fleet-token"]
  }
  statement {
    sid       = "DecryptIt"
    actions   = ["kms:Decrypt"]
    resources = [var.parameters_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "parameters" {
  name   = "read-fleet-token"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.parameters.json
}

resource "aws_iam_instance_profile" "this" {
  name = "ferry-spokes-${var.name}"
  role = aws_iam_role.this.name
  tags = var.tags
}

resource "aws_launch_template" "this" {
  #checkov:skip=CKV_AWS_88:Spokes answer clients at their own public addresses, which DNS steering hands out
  name_prefix            = "ferry-spokes-${var.name}-"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  ebs_optimized          = true
  user_data = base64encode(templatefile("${path.module}/cloud-init.yaml.tftpl", {
    package_url      = var.package_url
    config_toml      = var.config_toml
    parameter_prefix = var.parameter_prefix
    region           = data.aws_region.current.name
    fleet            = var.name
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  # Spokes answer clients at their own public addresses (DNS steering
  # hands them out), so each has one.
  network_interfaces {
    associate_public_ip_address = true
    security_groups             = [var.security_group_id]
    delete_on_termination       = true
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      encrypted   = true
      volume_type = "gp3"
      volume_size = 16
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "ferry-spoke-${var.name}" })
  }

  tags = var.tags
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:Only health checks and a regional fallback pass here; every spoke logs its own requests
  #checkov:skip=CKV_AWS_150:Fleets are replaced by Terraform; deletion protection would block that
  #checkov:skip=CKV2_AWS_28:A network load balancer passing TLS through cannot have a WAF
  name                             = "ferry-spokes-${var.name}"
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  enable_cross_zone_load_balancing = true
  tags                             = var.tags
}

resource "aws_lb_target_group" "this" {
  name                 = "ferry-spokes-${var.name}"
  port                 = var.api_port
  protocol             = "TCP"
  vpc_id               = var.vpc_id
  deregistration_delay = 45
  health_check {
    protocol            = "HTTPS"
    path                = "/readyz"
    port                = "traffic-port"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
  tags = var.tags
}

resource "aws_lb_listener" "this" {
  #checkov:skip=CKV_AWS_2:TLS passes through to the spokes, which terminate it themselves
  #checkov:skip=CKV_AWS_103:TLS passes through to the spokes, which terminate it with TLS 1.2 or 1.3
  load_balancer_arn = aws_lb.this.arn
  port              = var.api_port
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
  tags = var.tags
}

resource "aws_autoscaling_group" "this" {
  name                      = "ferry-spokes-${var.name}"
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_type         = "ELB"
  health_check_grace_period = 180
  target_group_arns         = [aws_lb_target_group.this.arn]
  # Longer than the spoke's drain (its unit's TimeoutStopSec).
  default_instance_warmup = 120

  launch_template {
    id      = aws_launch_template.this.id
    version = "$Latest"
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "ferry-spoke-${var.name}" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
