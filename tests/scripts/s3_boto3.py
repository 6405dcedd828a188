"""boto3, unmodified, against ferry's S3 door: buckets, objects, ranges,
listings and the errors a client must get. Arguments: endpoint, access key
id, secret, bucket, a read-only key id and its secret. Exits non-zero,
saying what went wrong, on the first difference."""

import datetime
import hashlib
import sys
import tempfile
import unittest.mock
import urllib.error
import urllib.request

import boto3
import botocore
import botocore.compat
from botocore.config import Config

endpoint, key_id, secret, bucket, ro_id, ro_secret = sys.argv[1:7]


def client(kid, sec, signature_version=None):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=kid,
        aws_secret_access_key=sec,
        region_name="us-east-1",
        config=Config(
            signature_version=signature_version,
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )


s3 = client(key_id, secret)


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


def error_code(call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        check(e.response["ResponseMetadata"].get("RequestId"), f"no request id: {e.response}")
        return e.response["Error"]["Code"]
    return None


listed_buckets = s3.list_buckets()
names = [b["Name"] for b in listed_buckets["Buckets"]]
check(listed_buckets["Owner"]["ID"].startswith("acc_"), f"the buckets' owner: {listed_buckets.get('Owner')}")
check(bucket in names, f"list_buckets: {names}")
s3.head_bucket(Bucket=bucket)

# Small and multi-MiB objects (recent boto3 sends a CRC trailer with
# aws-chunked streaming by default).
small = b"hello from boto3\n"
s3.put_object(Bucket=bucket, Key="docs/hello.txt", Body=small, ContentType="text/plain")
big = bytes(range(256)) * (6 * 4096)  # 6 MiB
s3.put_object(Bucket=bucket, Key="docs/deep/big.bin", Body=big)

got = s3.get_object(Bucket=bucket, Key="docs/hello.txt")
check(got["Body"].read() == small, "get_object small")
check(got["ContentType"] == "text/plain", f"content type {got['ContentType']}")
got = s3.get_object(Bucket=bucket, Key="docs/deep/big.bin")
check(hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(big).digest(), "get_object big")
part = s3.get_object(Bucket=bucket, Key="docs/deep/big.bin", Range="bytes=10-19")
check(part["Body"].read() == big[10:20], "ranged get")
head = s3.head_object(Bucket=bucket, Key="docs/deep/big.bin")
check(head["ContentLength"] == len(big), f"head length {head['ContentLength']}")
etag = head["ETag"]
check(
    error_code(lambda: s3.get_object(Bucket=bucket, Key="docs/hello.txt", IfMatch='"nope"'))
    == "PreconditionFailed",
    "If-Match that does not match",
)
s3.get_object(Bucket=bucket, Key="docs/deep/big.bin", IfMatch=etag)

# Checksums when asked for: ferry's CRC64/NVME of the whole object, the
# same on HEAD, GET and as PutObject answered it; none on a range.
import base64

asked = s3.head_object(Bucket=bucket, Key="docs/deep/big.bin", ChecksumMode="ENABLED")
crc = asked.get("ChecksumCRC64NVME")
check(crc is not None and len(base64.b64decode(crc)) == 8, f"ChecksumCRC64NVME on HEAD: {asked}")
check("ChecksumCRC64NVME" not in s3.head_object(Bucket=bucket, Key="docs/deep/big.bin"), "a checksum not asked for")
got = s3.get_object(Bucket=bucket, Key="docs/deep/big.bin", ChecksumMode="ENABLED")
check(got.get("ChecksumCRC64NVME") == crc and got["Body"].read() == big, "ChecksumCRC64NVME on GET")
ranged = s3.get_object(Bucket=bucket, Key="docs/deep/big.bin", ChecksumMode="ENABLED", Range="bytes=0-9")
check("ChecksumCRC64NVME" not in ranged, "no whole-object checksum on a range")
put = s3.put_object(Bucket=bucket, Key="docs/crc.txt", Body=b"crc")


def crc64nvme(data):
    """CRC-64/NVME, bit by bit (S3's: reflected, all ones in and out)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x9A6C9329AC4BC9B5 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


check(crc64nvme(b"123456789") == 0xAE8B14860A799888, "the CRC-64/NVME check value")
expected = base64.b64encode(crc64nvme(b"crc").to_bytes(8, "big")).decode()
check(
    put.get("ChecksumCRC64NVME") == expected
    == s3.head_object(Bucket=bucket, Key="docs/crc.txt", ChecksumMode="ENABLED")["ChecksumCRC64NVME"],
    f"PutObject's checksum: {put}, expected {expected}",
)
s3.delete_object(Bucket=bucket, Key="docs/crc.txt")

flat = s3.list_objects_v2(Bucket=bucket, Prefix="docs/")
keys = sorted(o["Key"] for o in flat.get("Contents", []))
# docs/from-ferry.txt was written through ferry's own API.
check(
    keys == ["docs/deep/big.bin", "docs/from-ferry.txt", "docs/hello.txt"],
    f"recursive listing {keys}",
)
check(all("Owner" not in o for o in flat["Contents"]), "no owner unless asked for")
owned = s3.list_objects_v2(Bucket=bucket, Prefix="docs/", FetchOwner=True)["Contents"]
check(
    all(o["Owner"]["ID"] == listed_buckets["Owner"]["ID"] for o in owned),
    f"fetch-owner: {owned}",
)
check(
    s3.get_object(Bucket=bucket, Key="docs/from-ferry.txt")["Body"].read() == b"ferry",
    "an object written through ferry's API",
)
tree = s3.list_objects_v2(Bucket=bucket, Prefix="docs/", Delimiter="/")
keys = [o["Key"] for o in tree.get("Contents", [])]
prefixes = [p["Prefix"] for p in tree.get("CommonPrefixes", [])]
check(
    keys == ["docs/from-ferry.txt", "docs/hello.txt"] and prefixes == ["docs/deep/"],
    f"listing {keys} {prefixes}",
)
paged = s3.list_objects_v2(Bucket=bucket, Prefix="docs/", MaxKeys=1)
check(paged["IsTruncated"] and len(paged["Contents"]) == 1, "first page")
rest = s3.list_objects_v2(
    Bucket=bucket, Prefix="docs/", MaxKeys=1, ContinuationToken=paged["NextContinuationToken"]
)
check(rest["Contents"][0]["Key"] == "docs/from-ferry.txt", "second page")

# boto3 presigns with SigV2 unless told otherwise; ferry takes SigV4 only.
v4 = client(key_id, secret, "s3v4")
url = v4.generate_presigned_url(
    "get_object", Params={"Bucket": bucket, "Key": "docs/hello.txt"}, ExpiresIn=60
)
with urllib.request.urlopen(url) as resp:
    check(resp.read() == small, "a presigned URL")
try:
    urllib.request.urlopen(
        s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "docs/hello.txt"})
    )
    check(False, "a SigV2 presigned URL was taken")
except urllib.error.HTTPError as e:
    check(e.code == 400, f"a SigV2 presigned URL: {e.code}")
# Signed as if two minutes ago, for one minute: expired now, without
# waiting for it to expire.
two_minutes_ago = botocore.compat.get_current_datetime() - datetime.timedelta(minutes=2)
with unittest.mock.patch("botocore.auth.get_current_datetime", lambda: two_minutes_ago):
    expired = v4.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "docs/hello.txt"}, ExpiresIn=60
    )
try:
    urllib.request.urlopen(expired)
    check(False, "an expired presigned URL was taken")
except urllib.error.HTTPError as e:
    check(e.code == 403, f"an expired presigned URL: {e.code}")
check(error_code(lambda: s3.get_object(Bucket=bucket, Key="missing")) == "NoSuchKey", "NoSuchKey")
check(error_code(lambda: s3.head_bucket(Bucket="not-mine")) in ("404", "NoSuchBucket"), "NoSuchBucket")
wrong = client(key_id, "x" * 40)
check(
    error_code(lambda: wrong.list_buckets()) == "SignatureDoesNotMatch",
    "a wrong secret",
)
v2 = client(key_id, secret, "s3")
check(error_code(lambda: v2.list_buckets()) == "InvalidRequest", "SigV2 is refused")
ro = client(ro_id, ro_secret)
check(ro.get_object(Bucket=bucket, Key="docs/hello.txt")["Body"].read() == small, "read-only reads")
check(
    error_code(lambda: ro.put_object(Bucket=bucket, Key="x", Body=b"x")) == "AccessDenied",
    "read-only writes",
)

# A copy within the bucket.
s3.copy_object(Bucket=bucket, Key="docs/copied.txt", CopySource={"Bucket": bucket, "Key": "docs/hello.txt"})
check(s3.get_object(Bucket=bucket, Key="docs/copied.txt")["Body"].read() == small, "copy_object")
s3.delete_object(Bucket=bucket, Key="docs/copied.txt")

# User metadata and representation fields are kept, sent back, carried
# by a copy, replaced by a copy that says REPLACE, and overridden by a
# GET's response-* parameters.
s3.put_object(
    Bucket=bucket, Key="docs/meta.txt", Body=b"meta", Metadata={"colour": "blue", "size": "large"},
    ContentDisposition='attachment; filename="m.txt"', ContentLanguage="en", CacheControl="max-age=60",
    ContentType="text/plain",
)
head = s3.head_object(Bucket=bucket, Key="docs/meta.txt")
check(head["Metadata"] == {"colour": "blue", "size": "large"}, f"metadata: {head['Metadata']}")
check(
    (head["ContentDisposition"], head["ContentLanguage"], head["CacheControl"], head["ContentType"])
    == ('attachment; filename="m.txt"', "en", "max-age=60", "text/plain"),
    f"representation fields: {head}",
)
got = s3.get_object(
    Bucket=bucket, Key="docs/meta.txt", ResponseContentDisposition="inline", ResponseContentType="text/x-test"
)
check(
    (got["ContentDisposition"], got["ContentType"], got["Metadata"]["colour"]) == ("inline", "text/x-test", "blue"),
    f"response-* overrides: {got}",
)
meta_etag = s3.head_object(Bucket=bucket, Key="docs/meta.txt")["ETag"]
for conditions in ({"CopySourceIfMatch": '"not-it"'}, {"CopySourceIfNoneMatch": meta_etag}):
    check(
        error_code(
            lambda: s3.copy_object(
                Bucket=bucket, Key="docs/meta-copy.txt", CopySource={"Bucket": bucket, "Key": "docs/meta.txt"},
                **conditions,
            )
        ) == "PreconditionFailed",
        f"a copy whose source condition fails: {conditions}",
    )
s3.copy_object(
    Bucket=bucket, Key="docs/meta-copy.txt", CopySource={"Bucket": bucket, "Key": "docs/meta.txt"},
    CopySourceIfMatch=meta_etag,
)
check(
    s3.head_object(Bucket=bucket, Key="docs/meta-copy.txt")["Metadata"] == {"colour": "blue", "size": "large"},
    "a copy keeps the metadata",
)
s3.copy_object(
    Bucket=bucket, Key="docs/meta-copy.txt", CopySource={"Bucket": bucket, "Key": "docs/meta.txt"},
    MetadataDirective="REPLACE", Metadata={"colour": "red"}, ContentType="text/x-replaced",
)
head = s3.head_object(Bucket=bucket, Key="docs/meta-copy.txt")
check(
    (head["Metadata"], head["ContentType"], head.get("ContentDisposition"))
    == ({"colour": "red"}, "text/x-replaced", None),
    f"a copy that replaces the metadata: {head}",
)
check(
    error_code(
        lambda: s3.copy_object(Bucket=bucket, Key="docs/meta.txt", CopySource={"Bucket": bucket, "Key": "docs/meta.txt"})
    ) == "InvalidRequest",
    "a copy onto itself that changes nothing",
)
s3.copy_object(
    Bucket=bucket, Key="docs/meta.txt", CopySource={"Bucket": bucket, "Key": "docs/meta.txt"},
    MetadataDirective="REPLACE", Metadata={"colour": "green"},
)
check(
    s3.head_object(Bucket=bucket, Key="docs/meta.txt")["Metadata"] == {"colour": "green"},
    "metadata replaced in place",
)
check(s3.get_object(Bucket=bucket, Key="docs/meta.txt")["Body"].read() == b"meta", "the content stays")
check(
    error_code(lambda: s3.put_object(Bucket=bucket, Key="docs/huge-meta.txt", Body=b"x", Metadata={"a": "x" * 2100}))
    == "MetadataTooLarge",
    "user metadata over 2 KB",
)
for k in ("docs/meta.txt", "docs/meta-copy.txt"):
    s3.delete_object(Bucket=bucket, Key=k)

# A multipart upload, as boto3's transfer manager sends it: three parts in
# parallel, joined at completion.
from boto3.s3.transfer import TransferConfig

large = bytes(range(251)) * (12 * 1024 * 1024 // 251)
with tempfile.NamedTemporaryFile(suffix=".bin") as f:
    f.write(large)
    f.flush()
    s3.upload_file(
        f.name,
        bucket,
        "big/parts.bin",
        ExtraArgs={"ContentType": "application/x-ferry-test", "Metadata": {"parts": "three"}},
        Config=TransferConfig(
            multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=3
        ),
    )
got = s3.get_object(Bucket=bucket, Key="big/parts.bin")
check(hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(large).digest(), "multipart upload")
check(got["ContentType"] == "application/x-ferry-test", f"multipart content type {got['ContentType']}")
check(got["Metadata"] == {"parts": "three"}, f"multipart metadata {got['Metadata']}")
small_parts = s3.create_multipart_upload(Bucket=bucket, Key="big/small.bin")
etags = [
    s3.upload_part(
        Bucket=bucket, Key="big/small.bin", UploadId=small_parts["UploadId"], PartNumber=n, Body=b"x"
    )["ETag"]
    for n in (1, 2)
]
check(
    error_code(
        lambda: s3.complete_multipart_upload(
            Bucket=bucket,
            Key="big/small.bin",
            UploadId=small_parts["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]},
        )
    )
    == "EntityTooSmall",
    "a part under 5 MiB before the last",
)
# Parts are listed; a part sent again under its number replaces the
# earlier one; the uploads in progress are listed, in pages.
listed = s3.list_parts(Bucket=bucket, Key="big/small.bin", UploadId=small_parts["UploadId"])
check(
    [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [(1, etags[0], 1), (2, etags[1], 1)],
    f"list_parts: {listed['Parts']}",
)
again = s3.upload_part(
    Bucket=bucket, Key="big/small.bin", UploadId=small_parts["UploadId"], PartNumber=2, Body=b"yy"
)["ETag"]
page = s3.list_parts(Bucket=bucket, Key="big/small.bin", UploadId=small_parts["UploadId"], MaxParts=1)
check(page["IsTruncated"] and [p["PartNumber"] for p in page["Parts"]] == [1], f"list_parts page 1: {page}")
page = s3.list_parts(
    Bucket=bucket, Key="big/small.bin", UploadId=small_parts["UploadId"],
    PartNumberMarker=page["NextPartNumberMarker"],
)
check(
    not page["IsTruncated"] and [(p["PartNumber"], p["ETag"]) for p in page["Parts"]] == [(2, again)],
    f"list_parts page 2: {page}",
)
others = [s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in ("big/a.bin", "big/z.bin")]
seen = []
paginator = s3.get_paginator("list_multipart_uploads")
for page in paginator.paginate(Bucket=bucket, Prefix="big/", PaginationConfig={"PageSize": 1}):
    seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
check(
    seen == [("big/a.bin", others[0]), ("big/small.bin", small_parts["UploadId"]), ("big/z.bin", others[1])],
    f"list_multipart_uploads: {seen}",
)
# A part copied from an object, by range, and the upload completed with it.
copied = s3.upload_part_copy(
    Bucket=bucket, Key="big/a.bin", UploadId=others[0], PartNumber=1,
    CopySource={"Bucket": bucket, "Key": "big/parts.bin"}, CopySourceRange="bytes=0-5242879",
)["CopyPartResult"]["ETag"]
tail = s3.upload_part(Bucket=bucket, Key="big/a.bin", UploadId=others[0], PartNumber=2, Body=b"tail")["ETag"]
s3.complete_multipart_upload(
    Bucket=bucket, Key="big/a.bin", UploadId=others[0],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": copied}, {"PartNumber": 2, "ETag": tail}]},
)
check(
    s3.get_object(Bucket=bucket, Key="big/a.bin")["Body"].read() == large[: 5 << 20] + b"tail",
    "upload_part_copy",
)
check(
    error_code(lambda: s3.list_parts(Bucket=bucket, Key="big/a.bin", UploadId=others[0])) == "NoSuchUpload",
    "a completed upload is gone",
)
for key, upload in (("big/small.bin", small_parts["UploadId"]), ("big/z.bin", others[1])):
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
mpu = s3.create_multipart_upload(Bucket=bucket, Key="big/aborted.bin")
s3.upload_part(Bucket=bucket, Key="big/aborted.bin", UploadId=mpu["UploadId"], PartNumber=1, Body=b"x")
s3.abort_multipart_upload(Bucket=bucket, Key="big/aborted.bin", UploadId=mpu["UploadId"])
check(
    error_code(lambda: s3.head_object(Bucket=bucket, Key="big/aborted.bin")) == "404",
    "an aborted upload left an object",
)
check(
    error_code(
        lambda: s3.upload_part(Bucket=bucket, Key="big/aborted.bin", UploadId=mpu["UploadId"], PartNumber=2, Body=b"x")
    ) == "NoSuchUpload",
    "a part of an aborted upload",
)
check(
    error_code(
        lambda: s3.upload_part(Bucket=bucket, Key="big/other.bin", UploadId="not-an-upload", PartNumber=1, Body=b"x")
    ) == "NoSuchUpload",
    "a part of no upload",
)
check(
    s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [],
    "no upload is left in progress",
)

# Keys are ferry's paths: `..` and empty segments are refused; spaces,
# letters of any script and 1,024 bytes in segments of at most 255 are
# kept.
for bad in ("a/../b.txt", "a//b.txt"):
    check(
        error_code(lambda: s3.put_object(Bucket=bucket, Key=bad, Body=b"x")) is not None,
        f"the key {bad!r} was taken",
    )
for good in ("unicode/déjà vu ✓ + ~.txt", "long/" + "/".join(["k" * 250] * 4) + "/" + "e" * 15):
    s3.put_object(Bucket=bucket, Key=good, Body=b"fine")
    check(s3.get_object(Bucket=bucket, Key=good)["Body"].read() == b"fine", f"the key {good!r}")
    s3.delete_object(Bucket=bucket, Key=good)

# Tampering after signing: a signed header changed is refused; a body
# changed after its SHA-256 was signed is refused and leaves nothing.
tamper = client(key_id, secret)


def change_header(request, **kwargs):
    request.headers["x-amz-date"] = "20200101T000000Z"


tamper.meta.events.register("before-send.s3.ListBuckets", change_header)
check(
    error_code(lambda: tamper.list_buckets()) in ("SignatureDoesNotMatch", "RequestTimeTooSkewed"),
    "a signed header changed",
)


def change_body(request, **kwargs):
    body = request.body
    data = body.read() if hasattr(body, "read") else body
    if data:
        request.body = data.replace(b"X", b"Y")


tamper.meta.events.register("before-send.s3.PutObject", change_body)
code = error_code(lambda: tamper.put_object(Bucket=bucket, Key="docs/tampered.txt", Body=b"X" * 100))
check(code is not None, "a body changed after signing was taken")
check(
    error_code(lambda: s3.head_object(Bucket=bucket, Key="docs/tampered.txt")) == "404",
    "a refused body left an object",
)

s3.delete_object(Bucket=bucket, Key="docs/hello.txt")
s3.delete_object(Bucket=bucket, Key="docs/hello.txt")
check(error_code(lambda: s3.head_object(Bucket=bucket, Key="docs/hello.txt")) == "404", "deleted")
print("ok")
