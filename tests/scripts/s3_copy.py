"""boto3, unmodified: CopyObject between two buckets (two connections of
one account, on different providers), the metadata carried along or
replaced. Arguments: endpoint, access key id, secret, source bucket,
target bucket. Exits non-zero, saying what went wrong, on the first
difference."""

import sys

import boto3
from botocore.config import Config

endpoint, key_id, secret, source, target = sys.argv[1:6]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=key_id,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


body = bytes(range(256)) * 4096
s3.put_object(Bucket=source, Key="copy/src.bin", Body=body, ContentType="application/x-src", Metadata={"from": source})
s3.copy_object(Bucket=target, Key="copy/dst.bin", CopySource={"Bucket": source, "Key": "copy/src.bin"})
got = s3.get_object(Bucket=target, Key="copy/dst.bin")
check(got["Body"].read() == body, "the copy's content")
check((got["ContentType"], got["Metadata"]) == ("application/x-src", {"from": source}), f"the copy's metadata: {got}")
s3.copy_object(
    Bucket=target, Key="copy/replaced.bin", CopySource={"Bucket": source, "Key": "copy/src.bin"},
    MetadataDirective="REPLACE", Metadata={"to": target}, ContentType="text/x-dst",
)
head = s3.head_object(Bucket=target, Key="copy/replaced.bin")
check((head["ContentType"], head["Metadata"], head["ContentLength"]) == ("text/x-dst", {"to": target}, len(body)), f"a copy with REPLACE: {head}")
error = None
try:
    s3.copy_object(Bucket=target, Key="copy/none.bin", CopySource={"Bucket": source, "Key": "copy/missing.bin"})
except s3.exceptions.ClientError as e:
    error = e.response["Error"]["Code"]
check(error == "NoSuchKey", f"a copy of nothing: {error}")
for bucket, key in ((source, "copy/src.bin"), (target, "copy/dst.bin"), (target, "copy/replaced.bin")):
    s3.delete_object(Bucket=bucket, Key=key)
print("ok")
