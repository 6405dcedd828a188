// How much memory the browser takes to download one file through the
// console: signs in, opens a connection's folder, downloads FILE, and
// samples the resident memory of every chromium process every 200 ms.
// Prints one JSON line: how the page saved it (`streamed` through the
// download worker, or `in-memory`), the idle and peak resident MiB, and
// the seconds it took.
//
//   NODE_PATH=target/test-tools/npm/node_modules \
//   HUB=http://127.0.0.1:8080 KEY=fry_… CONN=local FILE=big.bin \
//   node tests/scripts/console_download_memory.js [workers|no-workers]
//
// `no-workers` blocks service workers, so the page reads the file whole
// first, as it does in browsers that cannot stream a download. Needs
// playwright-core (scripts/install-test-deps.sh installs it) and Debian's
// chromium (CHROMIUM, default /usr/bin/chromium).
const { chromium } = require('playwright-core');
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { HUB = 'http://127.0.0.1:8080', KEY, CONN = 'local', FILE, CHROMIUM = '/usr/bin/chromium' } = process.env;
const mode = process.argv[2] ?? 'workers';
if (!KEY || !FILE || !['workers', 'no-workers'].includes(mode)) {
  console.error('usage: HUB=… KEY=… CONN=… FILE=… node console_download_memory.js [workers|no-workers]');
  process.exit(2);
}

/** Resident memory of every chromium process, MiB. */
function residentMiB() {
  let out = '';
  try {
    out = execFileSync('ps', ['-C', 'chromium', '-o', 'rss=']).toString();
  } catch {
    return 0;
  }
  return out.split('\n').filter(Boolean).reduce((a, kib) => a + Number(kib), 0) / 1024;
}

(async () => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  const context = await browser.newContext({ acceptDownloads: true, serviceWorkers: mode === 'workers' ? 'allow' : 'block' });
  const page = await context.newPage();
  await page.goto(`${HUB}/console`);
  await page.getByLabel('API key or admin token').fill(KEY);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Connections', level: 1 }).waitFor();
  await page.getByRole('link', { name: CONN, exact: true }).click();
  const row = page.locator(`#files tbody tr[data-path="${FILE}"]`);
  await row.waitFor({ timeout: 30000 });
  await page.waitForTimeout(1000);
  const idle = residentMiB();
  let peak = idle;
  const sampler = setInterval(() => {
    peak = Math.max(peak, residentMiB());
  }, 200);
  const t0 = Date.now();
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 600000 }),
    row.getByRole('button', { name: 'Download' }).click(),
  ]);
  const saved = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-dl-')), 'file');
  await download.saveAs(saved);
  const status = page.locator('[role=status]', { hasText: /^Downloaded/ });
  await status.waitFor({ timeout: 600000 });
  const how = await status.getAttribute('data-saved');
  clearInterval(sampler);
  const bytes = fs.statSync(saved).size;
  fs.rmSync(path.dirname(saved), { recursive: true, force: true });
  console.log(
    JSON.stringify({
      mode,
      saved: how,
      bytes,
      idle_mib: Math.round(idle),
      peak_mib: Math.round(peak),
      added_mib: Math.round(peak - idle),
      seconds: (Date.now() - t0) / 1000,
    }),
  );
  await browser.close();
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
