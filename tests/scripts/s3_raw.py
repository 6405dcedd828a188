"""What no SDK sends on purpose, sent to ferry's S3 door by hand: a clock
15+ minutes off, `aws-chunked` bodies with chunk signatures (one of them
wrong, in the middle), trailing and header checksums that do not match the
body. Each bad request must be refused with S3's code and leave nothing
behind. Requests are signed here with SigV4 as the AWS documentation
describes it. Arguments: endpoint, access key id, secret, bucket. Exits
non-zero, saying what went wrong, on the first difference."""

import base64
import datetime
import hashlib
import hmac
import http.client
import sys
import urllib.parse
import zlib

endpoint, key_id, secret, bucket = sys.argv[1:5]
url = urllib.parse.urlsplit(endpoint)
REGION = "us-east-1"
EMPTY = hashlib.sha256(b"").hexdigest()


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


def hmac256(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(day):
    k = hmac256(("AWS4" + secret).encode(), day)
    k = hmac256(k, REGION)
    k = hmac256(k, "s3")
    return hmac256(k, "aws4_request")


def sign(method, path, headers, payload_hash, when):
    """Adds SigV4's fields to `headers`; returns the seed signature."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = when.strftime("%Y%m%d")
    headers["host"] = url.netloc
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    names = sorted(h.lower() for h in headers)
    canonical_headers = "".join(f"{n}:{headers[n].strip()}\n" for n in names)
    signed = ";".join(names)
    canonical = "\n".join(
        [method, urllib.parse.quote(path), "", canonical_headers, signed, payload_hash]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signature = hmac.new(signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return signature


def send(method, path, headers, body=b""):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def code_of(data):
    text = data.decode(errors="replace")
    if "<Code>" not in text:
        return None
    return text.split("<Code>")[1].split("</Code>")[0]


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def path_of(key):
    return f"/{bucket}/{key}"


def absent(key):
    status, _ = send("HEAD", path_of(key), signed_headers("HEAD", key))
    return status == 404


def signed_headers(method, key, when=None):
    headers = {}
    sign(method, path_of(key), headers, EMPTY, when or now())
    return headers


def put_plain(key, body, extra):
    headers = dict(extra)
    headers["content-length"] = str(len(body))
    sign("PUT", path_of(key), headers, "UNSIGNED-PAYLOAD", now())
    return send("PUT", path_of(key), headers, body)


# A clock 20 minutes slow: S3 refuses it, whatever the signature.
status, data = send("GET", path_of("raw/none"), signed_headers(
    "GET", "raw/none", now() - datetime.timedelta(minutes=20)))
check((status, code_of(data)) == (403, "RequestTimeTooSkewed"), f"skewed clock: {status} {data!r}")
check(b"<RequestId>" in data, f"an error names its request: {data!r}")


def chunked_signed(key, chunks, spoil=None):
    """A PUT with a signed aws-chunked body; the chunk at index `spoil`
    gets a signature that does not match."""
    when = now()
    decoded = sum(len(c) for c in chunks)
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(decoded),
    }
    encoded_len = 0
    frames = list(chunks) + [b""]
    for c in frames:
        encoded_len += len(f"{len(c):x};chunk-signature=") + 64 + 2 + len(c) + 2
    headers["content-length"] = str(encoded_len)
    seed = sign("PUT", path_of(key), headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", when)
    day = when.strftime("%Y%m%d")
    scope = f"{day}/{REGION}/s3/aws4_request"
    key_bytes = signing_key(day)
    previous = seed
    body = b""
    for i, c in enumerate(frames):
        to_sign = "\n".join([
            "AWS4-HMAC-SHA256-PAYLOAD", when.strftime("%Y%m%dT%H%M%SZ"), scope,
            previous, EMPTY, hashlib.sha256(c).hexdigest(),
        ])
        sig = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
        previous = sig
        if i == spoil:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
    check(len(body) == encoded_len, "the encoded length")
    return send("PUT", path_of(key), headers, body)


chunks = [bytes([65 + i]) * (64 * 1024) for i in range(3)]
status, data = chunked_signed("raw/chunked.bin", chunks)
check(status == 200, f"signed chunks: {status} {data!r}")
status, got = send("GET", path_of("raw/chunked.bin"), signed_headers("GET", "raw/chunked.bin"))
check(status == 200 and got == b"".join(chunks), f"signed chunks read back: {status} {len(got)}")

# The second of three chunks signed wrong: refused, and nothing written.
status, data = chunked_signed("raw/spoiled.bin", chunks, spoil=1)
check((status, code_of(data)) == (403, "SignatureDoesNotMatch"), f"a bad chunk signature: {status} {data!r}")
check(absent("raw/spoiled.bin"), "a body with a bad chunk signature left an object")


def chunked_trailer(key, body, trailer_name, trailer_value):
    """A PUT with an unsigned aws-chunked body and a trailing checksum."""
    frame = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
    frame += f"{trailer_name}:{trailer_value}\r\n\r\n".encode()
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(body)),
        "x-amz-trailer": trailer_name,
        "content-length": str(len(frame)),
    }
    sign("PUT", path_of(key), headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", now())
    return send("PUT", path_of(key), headers, frame)


def b64(raw):
    return base64.b64encode(raw).decode()


body = b"a body with a trailing checksum\n" * 1000
crc32 = b64(zlib.crc32(body).to_bytes(4, "big"))
status, data = chunked_trailer("raw/trailer.txt", body, "x-amz-checksum-crc32", crc32)
check(status == 200, f"a right CRC32 trailer: {status} {data!r}")
sha1 = b64(hashlib.sha1(body).digest())
status, data = chunked_trailer("raw/trailer-sha1.txt", body, "x-amz-checksum-sha1", sha1)
check(status == 200, f"a right SHA-1 trailer: {status} {data!r}")
wrong = b64((zlib.crc32(body) ^ 1).to_bytes(4, "big"))
status, data = chunked_trailer("raw/bad-trailer.txt", body, "x-amz-checksum-crc32", wrong)
check((status, code_of(data)) == (400, "BadDigest"), f"a wrong CRC32 trailer: {status} {data!r}")
check(absent("raw/bad-trailer.txt"), "a body with a wrong trailer left an object")

# Checksums in header fields.
sha256 = b64(hashlib.sha256(body).digest())
status, data = put_plain("raw/sha256.txt", body, {"x-amz-checksum-sha256": sha256})
check(status == 200, f"a right x-amz-checksum-sha256: {status} {data!r}")
status, data = put_plain("raw/bad-sha256.txt", body, {"x-amz-checksum-sha256": b64(hashlib.sha256(b"x").digest())})
check((status, code_of(data)) == (400, "BadDigest"), f"a wrong x-amz-checksum-sha256: {status} {data!r}")
check(absent("raw/bad-sha256.txt"), "a body with a wrong x-amz-checksum-sha256 left an object")
status, data = put_plain("raw/md5.txt", body, {"content-md5": b64(hashlib.md5(body).digest())})
check(status == 200, f"a right Content-MD5: {status} {data!r}")
status, data = put_plain("raw/bad-md5.txt", body, {"content-md5": b64(hashlib.md5(b"x").digest())})
check((status, code_of(data)) == (400, "BadDigest"), f"a wrong Content-MD5: {status} {data!r}")
check(absent("raw/bad-md5.txt"), "a body with a wrong Content-MD5 left an object")
status, data = put_plain("raw/junk.txt", body, {"x-amz-checksum-crc32": "not base64!"})
check((status, code_of(data)) == (400, "InvalidRequest"), f"a malformed checksum: {status} {data!r}")

print("ok")
