"""Uploads one file with tuspy, unmodified, the way an application that
knows several ferry nodes would: when the node it is talking to fails, it
resumes the same upload through the next node (a new uploader given the
upload's URL on that node; tuspy asks the node for the offset).

    python tus_upload.py FILE NAME KEY CHUNK_BYTES ENDPOINT...

Prints `url <upload url>`, `progress <bytes>`, `switch <endpoint>` and
`done <upload url>` lines on standard output; exits 0 once the upload
succeeded, 1 when every endpoint failed.
"""

import sys
from urllib.parse import urlparse

from tusclient import client


def main():
    file, name, key, chunk, *endpoints = sys.argv[1:]
    path = None
    for i, base in enumerate(endpoints):
        if i:
            print(f"switch {base}", flush=True)
        tus = client.TusClient(
            f"{base}/v1/connections/local/uploads",
            headers={"Authorization": f"Bearer {key}"},
        )
        try:
            uploader = tus.uploader(
                file,
                url=f"{base}{path}" if path else None,
                chunk_size=int(chunk),
                metadata={"filename": name, "filetype": "application/octet-stream"},
                # Outlasts the hub noticing a dead node that still holds the
                # upload's lease (423 meanwhile).
                retries=5,
                retry_delay=1,
            )
            size = uploader.get_file_size()
            while uploader.offset < size:
                uploader.upload_chunk()
                if path is None:
                    # tuspy creates the upload with its first chunk.
                    path = urlparse(uploader.url).path
                    print(f"url {uploader.url}", flush=True)
                print(f"progress {uploader.offset}", flush=True)
            print(f"done {uploader.url}", flush=True)
            return 0
        except Exception as e:  # the node failed: try the next one
            print(f"error {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
