# Delegates the steering zone to the hubs in Route 53: an NS record in the
# parent zone naming every hub's name server, and an A record for each
# name server (in the parent zone, so no glue is needed).

resource "aws_route53_record" "name_server" {
  #checkov:skip=CKV2_AWS_23:The address is a hub's elastic IP, made by the hub module (often in another region's provider)
  for_each = { for h in var.hubs : h.name_server => h.address }
  zone_id  = var.parent_zone_id
  name     = each.key
  type     = "A"
  ttl      = var.ttl
  records  = [each.value]
}

resource "aws_route53_record" "delegation" {
  zone_id = var.parent_zone_id
  name    = var.steering_zone
  type    = "NS"
  ttl     = var.ttl
  records = [for h in var.hubs : "${h.name_server}."]
}
