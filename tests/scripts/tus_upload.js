// Uploads one file with tus-js-client, unmodified, the way an application
// that knows several ferry nodes would: when the node it is talking to
// fails past the client's own retries, it resumes the same upload through
// the next node (tus-js-client's `uploadUrl`, pointed at that node).
//
//   node tus_upload.js FILE NAME KEY CHUNK_BYTES ENDPOINT...
//
// With TUS_PARALLEL=N in the environment, the file goes up as N partial
// uploads at once, joined by a final one (tus concatenation; no switching).
//
// Prints `url <upload url>`, `progress <bytes>`, `switch <endpoint>` and
// `done <upload url>` lines on standard output; exits 0 once the upload
// succeeded, 1 when every endpoint failed.
'use strict';
const fs = require('fs');
const tus = require('tus-js-client');

const [file, name, key, chunk, ...endpoints] = process.argv.slice(2);
const data = fs.readFileSync(file);
let node = 0;
let uploadPath = null;
let lastShown = 0;

function start() {
  const base = endpoints[node];
  const upload = new tus.Upload(data, {
    endpoint: `${base}/v1/connections/local/uploads`,
    uploadUrl: uploadPath ? `${base}${uploadPath}` : null,
    headers: { Authorization: `Bearer ${key}` },
    chunkSize: Number(chunk),
    metadata: { filename: name, filetype: 'application/octet-stream' },
    // Long enough to outlast the hub noticing a dead node that still holds
    // the upload's lease (423 meanwhile), short enough to move on soon
    // from a node that does not answer at all.
    retryDelays: [0, 500, 1000, 2000, 4000],
    parallelUploads: Number(process.env.TUS_PARALLEL || 1),
    removeFingerprintOnSuccess: true,
    onUploadUrlAvailable() {
      uploadPath = new URL(upload.url).pathname;
      console.log(`url ${upload.url}`);
    },
    onProgress(sent) {
      if (sent - lastShown >= 4 << 20 || sent === data.length) {
        lastShown = sent;
        console.log(`progress ${sent}`);
      }
    },
    onError(err) {
      console.log(`error ${String(err).split('\n')[0]}`);
      node += 1;
      if (node >= endpoints.length) process.exit(1);
      console.log(`switch ${endpoints[node]}`);
      start();
    },
    onSuccess() {
      console.log(`done ${upload.url}`);
      process.exit(0);
    },
  });
  upload.start();
}

start();
