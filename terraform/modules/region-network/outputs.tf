output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "subnet_ids" {
  description = "The public subnets, one per availability zone, in the order given."
  value       = aws_subnet.public[*].id
}

output "hub_security_group_id" {
  description = "Security group for hubs: API, tunnel (UDP and TCP) and DNS (UDP and TCP) open; metrics to operator_cidrs."
  value       = aws_security_group.hub.id
}

output "spoke_security_group_id" {
  description = "Security group for spokes: the API open; metrics to operator_cidrs."
  value       = aws_security_group.spoke.id
}
