output "autoscaling_group_name" {
  description = "The fleet's auto-scaling group."
  value       = aws_autoscaling_group.this.name
}

output "load_balancer_dns_name" {
  description = "The network load balancer in front of the fleet: its health checks keep the group healthy, and it is a stable regional address for the spokes."
  value       = aws_lb.this.dns_name
}

output "role_name" {
  description = "The spokes' instance role (reads the fleet token only)."
  value       = aws_iam_role.this.name
}
