"""boto3, unmodified, with virtual-host style addressing: the bucket in the
host name (`<bucket>.s3.test`), as AWS's own endpoints are used. The
names resolve to the node's address here (as a DNS record or /etc/hosts
line would make them). Arguments: the node's address (host:port), access
key id, secret, bucket. Exits non-zero, saying what went wrong, on the
first difference."""

import hashlib
import socket
import sys
import tempfile

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

addr, key_id, secret, bucket = sys.argv[1:5]
node_host, node_port = addr.rsplit(":", 1)
DOMAIN = "s3.test"

real_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if host == DOMAIN or host.endswith("." + DOMAIN):
        host = node_host
    return real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = getaddrinfo


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


s3 = boto3.client(
    "s3",
    endpoint_url=f"http://{DOMAIN}:{node_port}",
    aws_access_key_id=key_id,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}),
)
seen = []
s3.meta.events.register("before-send.s3", lambda request, **_: seen.append(request.url))

s3.put_object(Bucket=bucket, Key="vhost/a.txt", Body=b"virtual")
check(seen[-1].startswith(f"http://{bucket}.{DOMAIN}:{node_port}/vhost/a.txt"), f"the bucket is in the host: {seen[-1]}")
check(s3.get_object(Bucket=bucket, Key="vhost/a.txt")["Body"].read() == b"virtual", "get_object")
check(s3.head_object(Bucket=bucket, Key="vhost/a.txt")["ContentLength"] == 7, "head_object")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="vhost/")["Contents"]]
check(keys == ["vhost/a.txt"], f"list_objects_v2: {keys}")
s3.head_bucket(Bucket=bucket)

large = bytes(range(251)) * (12 * 1024 * 1024 // 251)
with tempfile.NamedTemporaryFile(suffix=".bin") as f:
    f.write(large)
    f.flush()
    s3.upload_file(
        f.name, bucket, "vhost/big.bin",
        Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=3),
    )
got = s3.get_object(Bucket=bucket, Key="vhost/big.bin")["Body"].read()
check(hashlib.sha256(got).digest() == hashlib.sha256(large).digest(), "a multipart upload, virtual-host style")
s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "vhost/a.txt"}, {"Key": "vhost/big.bin"}]})
check("Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="vhost/"), "delete_objects")

# Path style keeps working on the same node, by address.
path_style = boto3.client(
    "s3",
    endpoint_url=f"http://{addr}",
    aws_access_key_id=key_id,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)
path_style.put_object(Bucket=bucket, Key="vhost/p.txt", Body=b"path")
check(s3.get_object(Bucket=bucket, Key="vhost/p.txt")["Body"].read() == b"path", "path style, then virtual-host style")
path_style.delete_object(Bucket=bucket, Key="vhost/p.txt")
print("ok")
