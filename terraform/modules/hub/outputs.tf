output "public_ip" {
  description = "The hub's elastic IP: for tunnel.public_addr, dns.hub_addrs, the spokes' [hub] and the DNS delegation."
  value       = aws_eip.this.public_ip
}

output "instance_id" {
  description = "The hub's EC2 instance."
  value       = aws_instance.this.id
}

output "role_name" {
  description = "The instance role (reads the hub's own parameters only)."
  value       = aws_iam_role.this.name
}

output "state_volume_id" {
  description = "The persistent, encrypted volume mounted at /var/lib/ferry (kept when the instance is replaced)."
  value       = aws_ebs_volume.state.id
}
