# A customer-managed KMS key with yearly rotation, administered by the
# account, and usable by the services named: the one key policy every
# ferry module needs.

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "this" {
  # A key policy's resource is always "*": the key it is attached to.
  #checkov:skip=CKV_AWS_111:A KMS key policy's "*" resource means this key only
  #checkov:skip=CKV_AWS_356:A KMS key policy's "*" resource means this key only
  #checkov:skip=CKV_AWS_109:The account root must manage its own key; the policy applies to this key only
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  dynamic "statement" {
    for_each = length(var.service_principals) > 0 ? [1] : []
    content {
      sid       = "Services"
      actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = var.service_principals
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description         = var.description
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.this.json
  tags                = var.tags
}

resource "aws_kms_alias" "this" {
  count         = var.alias == null ? 0 : 1
  name          = var.alias
  target_key_id = aws_kms_key.this.key_id
}
