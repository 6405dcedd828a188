// Drives the console in a real browser (Debian's chromium through
// playwright-core, unmodified; no browser is downloaded), as a developer and
// then as an operator would, and checks what the page shows.
//
//   node console_e2e.js
//
// Reads HUB (the hub's base URL), KEY (an account's API key), ADMIN (the
// admin token), ROOT (a folder for the `fs` connection made through the
// form), WEIRD (a file name already in ROOT), OUT (where screenshots go)
// and CHROMIUM (the browser) from the environment.
//
// Prints one line per step on standard output; `kill-a-spoke` asks the
// test to kill a spoke, and the script goes on when a line arrives on
// standard input. Exits 1 with the reason on the first failed check.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

const { HUB, KEY, ADMIN, ROOT, WEIRD, OUT, CHROMIUM } = process.env;
const SIZE = 50 * 1024 * 1024;

function say(step, detail = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...detail })}\n`);
}
function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}
const sha256 = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const stdinLines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => stdinLines.once('line', resolve));

/** Every form control on the page has a label. */
async function allLabelled(page, where) {
  const unlabelled = await page.evaluate(() =>
    Array.from(document.querySelectorAll('input, select, textarea'))
      .filter((el) => el.type !== 'hidden' && el.labels.length === 0 && !el.getAttribute('aria-label'))
      .map((el) => el.id || el.name || el.outerHTML.slice(0, 60)),
  );
  check(unlabelled.length === 0, `every control labelled on ${where}: ${unlabelled}`);
}

async function signIn(page, token, heading) {
  await page.goto(`${HUB}/console`);
  await page.getByLabel('API key or admin token').fill(token);
  // The keyboard alone: Enter submits the form.
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: heading, level: 1 }).waitFor();
}

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  for (const old of fs.readdirSync(OUT).filter((n) => n.startsWith('failed-'))) {
    fs.rmSync(path.join(OUT, old));
  }
  const shot = (page, name) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu'],
  });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  // Violations of the page's policy, as the browser reports them.
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  const alerts = [];
  const consoleErrors = [];
  context.on('page', (p) => {
    pages.push(p);
    p.on('dialog', async (d) => {
      if (d.type() === 'alert') {
        alerts.push(d.message());
        await d.dismiss();
      } else {
        await d.accept();
      }
    });
    p.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
  });
  const page = await context.newPage();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-console-'));

  // Signing in.
  await page.goto(`${HUB}/console`);
  await page.getByLabel('API key or admin token').waitFor();
  await allLabelled(page, 'sign-in');
  await shot(page, 'console-sign-in');
  await signIn(page, KEY, 'Connections');
  say('signed-in');

  // A connection made with the form.
  await page.getByLabel('Name', { exact: true }).fill('web');
  await page.getByLabel('Provider').selectOption('fs');
  await page.getByLabel('Folder (on the hub and its spokes)').fill(ROOT);
  await allLabelled(page, 'connections');
  await page.getByRole('button', { name: 'Create connection' }).click();
  await page.getByRole('link', { name: 'web', exact: true }).waitFor();
  await shot(page, 'console-connections');
  say('connection-created');

  // The file browser; the file with a hostile name is text.
  await page.getByRole('link', { name: 'web', exact: true }).click();
  await page.getByRole('heading', { name: 'Files', level: 1 }).waitFor();
  const weird = page.locator('#files tbody tr', { hasText: WEIRD });
  await weird.first().waitFor({ timeout: 15000 });
  check((await weird.first().locator('td.name').textContent()) === WEIRD, 'the hostile name shown as its characters');
  check((await page.locator('#files img').count()) === 0, 'no element made from a file name');

  // Uploading 50 MiB through the nearest spoke.
  const source = path.join(tmp, 'big.bin');
  fs.writeFileSync(source, crypto.randomBytes(SIZE));
  await page.setInputFiles('#upload-file', source);
  await allLabelled(page, 'files');
  await page.getByRole('button', { name: 'Upload', exact: true }).click();
  // Done, or an error shown in words: whichever comes first.
  await page.waitForFunction(
    () =>
      Array.from(document.querySelectorAll('[role=status], [role=alert]')).some(
        (s) => s.textContent.startsWith('Uploaded big.bin') || s.getAttribute('role') === 'alert' && s.textContent !== '',
      ),
    null,
    { timeout: 120000 },
  );
  const shown = await page.locator('[role=alert]').allTextContents();
  check(shown.every((t) => t === ''), `no error shown after the upload: ${shown}`);
  // The listing drawn again with the file, and the page saying how it went.
  await page.waitForFunction(
    () =>
      document.querySelector('#files tbody tr[data-path="big.bin"]') &&
      Array.from(document.querySelectorAll('[role=status]')).some((s) => s.textContent.startsWith('Uploaded')),
    null,
    { timeout: 30000 },
  );
  const said = (await page.getByRole('status').allTextContents()).find((t) => t.startsWith('Uploaded')) ?? '';
  const via = /through spoke (\S+)\./.exec(said);
  check(via, `uploaded through a spoke: "${said}"`);
  say('uploaded', { via: via[1] });
  const row = page.locator('#files tbody tr[data-path="big.bin"]');
  await row.waitFor();
  check((await row.locator('td').nth(2).textContent()) === String(SIZE), 'listed with its size in bytes');
  await shot(page, 'console-files');

  // Downloading it back: the same bytes.
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 120000 }),
    row.getByRole('button', { name: 'Download' }).click(),
  ]);
  const back = path.join(tmp, 'back.bin');
  await download.saveAs(back);
  check(sha256(back) === sha256(source), 'the download has the upload\'s SHA-256');
  await page.waitForFunction(
    () => Array.from(document.querySelectorAll('[role=status]')).some((s) => s.textContent.startsWith('Downloaded')),
  );
  const fetched = (await page.getByRole('status').allTextContents()).find((t) => t.startsWith('Downloaded')) ?? '';
  check(/through spoke \S+\.$/.test(fetched), `downloaded through a spoke: "${fetched}"`);
  const how = await page.evaluate(() =>
    Array.from(document.querySelectorAll('[role=status]')).find((s) => s.textContent.startsWith('Downloaded'))?.dataset.saved,
  );
  check(how === 'streamed', `saved to disk as it arrived, not read whole first: ${how}`);
  say('downloaded');

  // Its events.
  await row.getByRole('button', { name: 'Events' }).click();
  await page.locator('section.events td', { hasText: 'created' }).first().waitFor();
  await shot(page, 'console-events');

  // Deleting it (the confirmation is accepted).
  await row.getByRole('button', { name: 'Delete' }).click();
  await page.locator('#files tbody tr[data-path="big.bin"]').waitFor({ state: 'detached' });
  say('deleted');

  // A key made and revoked; a request with it then fails.
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.getByRole('heading', { name: 'API keys', level: 1 }).waitFor();
  await page.getByRole('button', { name: 'Create API key' }).click();
  const made = await page.locator('#new-key').inputValue();
  check(made.startsWith('fry_'), 'a new key shown once');
  const ask = (key) => fetch(`${HUB}/v1/connections`, { headers: { Authorization: `Bearer ${key}` } });
  check((await ask(made)).status === 200, 'the new key works');
  await shot(page, 'console-keys');
  page.once('dialog', () => {});
  await page.locator('#keys tbody tr', { hasText: made.slice(0, 12) }).getByRole('button', { name: 'Revoke' }).click();
  await page.locator('#keys tbody tr', { hasText: made.slice(0, 12) }).getByText('revoked').waitFor();
  check((await ask(made)).status === 401, 'the revoked key is refused');
  say('key-revoked');

  // The layout at phone width.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole('link', { name: 'Files' }).click();
  await page.getByRole('heading', { name: 'Files', level: 1 }).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no sideways scrolling at phone width (${overflow} px too wide)`);
  await shot(page, 'console-phone');
  await page.setViewportSize({ width: 1280, height: 900 });

  // The operator's view, in a tab of its own.
  const op = await context.newPage();
  await signIn(op, ADMIN, 'Spokes');
  await op.waitForFunction(
    () => document.querySelectorAll('#spokes tr[data-status="healthy"]').length === 2,
    null,
    { timeout: 20000 },
  );
  await allLabelled(op, 'spokes');
  // The hub lists itself, hearing both spokes, each with a round trip.
  await op.locator('#hubs tr[data-this="true"][data-spokes="2"]').waitFor({ timeout: 10000 });
  const store = await op.locator('#hubs tr[data-this="true"] td:nth-of-type(4)').textContent();
  check(store === 'SQLite', `this hub's store shown: ${store}`);
  for (const name of ['fra1', 'ams1']) {
    const rtt = await op.locator(`#spokes tr[data-spoke="${name}"] td:nth-of-type(4)`).textContent();
    check(/^\d+ ms$/.test(rtt.trim()), `${name}'s round trip to the hub shown: ${rtt}`);
  }
  await shot(op, 'console-spokes');
  say('kill-a-spoke');
  const killed = await nextLine();
  const t0 = Date.now();
  await op.waitForFunction(
    (name) => document.querySelector(`#spokes tr[data-spoke="${name}"]`)?.dataset.status === 'down',
    killed.trim(),
    { timeout: 15000 },
  );
  say('spoke-down', { seconds: (Date.now() - t0) / 1000 });
  check((await op.locator('#spokes tr[data-status="healthy"]').count()) === 1, 'the other spoke still healthy');
  await shot(op, 'console-spoke-down');

  // A fleet token made here enrols a spoke; revoked here, it is shown so.
  await op.getByLabel('Name prefix (its spokes are named prefix-…)').fill('e2e');
  await op.getByLabel('Host names their probe URLs may use').fill('*.e2e.example.com');
  await op.getByRole('button', { name: 'Make a fleet token' }).click();
  const fleetToken = await op.locator('#fleet-token').inputValue({ timeout: 10000 });
  check(fleetToken.startsWith('fft_'), `a fleet token shown: ${fleetToken}`);
  await op.locator('#fleets tr[data-state="active"]').first().waitFor();
  say('fleet-made', { token: fleetToken });
  check((await nextLine()).trim() === 'enrolled', 'the fleet token enrolled a spoke');
  await allLabelled(op, 'fleets');
  await shot(op, 'console-fleets');
  await op.getByRole('button', { name: /^Revoke fleet token e2e-/ }).click();
  await op.locator('#fleets tr[data-state="revoked"]').first().waitFor();
  check(
    (await op.locator('#fleets tr[data-state="active"]').count()) === 0,
    'no fleet token active after the revocation',
  );

  for (const p of [page, op]) {
    const v = await p.evaluate(() => window.__violations);
    check(v.length === 0, `no policy violation reported: ${v}`);
  }
  check(alerts.length === 0, `no alert ran: ${alerts}`);
  const cspErrors = consoleErrors.filter((e) => /Content Security Policy/i.test(e));
  check(cspErrors.length === 0, `no policy error in the console: ${cspErrors}`);
  await browser.close();
  fs.rmSync(tmp, { recursive: true, force: true });
  say('done');
  stdinLines.close();
}

let pages = [];
main().catch(async (e) => {
  // What the pages showed when it failed.
  for (const [i, p] of pages.entries()) {
    try {
      await p.screenshot({ path: path.join(OUT, `failed-${i}.png`), fullPage: true });
      const shown = await p.locator('[role=alert], [role=status]').allTextContents();
      process.stdout.write(`${JSON.stringify({ step: 'page', url: p.url(), shown })}\n`);
    } catch {
      // The browser is gone.
    }
  }
  process.stdout.write(`${JSON.stringify({ step: 'failed', error: String(e && e.stack || e) })}\n`);
  process.exit(1);
});
