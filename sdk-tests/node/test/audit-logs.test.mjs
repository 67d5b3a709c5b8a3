// The official WorkOS Node SDK (@workos-inc/node 11.0.0) against audit-testkit.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  WorkOS,
  NotFoundException,
  BadRequestException,
  RateLimitExceededException,
  UnauthorizedException,
} from '@workos-inc/node';
import { startTestkit } from '../testkit.mjs';

let tk;
let workos;

const sdk = (key = 'sk_test_node') =>
  new WorkOS(key, { apiHostname: tk.host, port: tk.port, https: false });

const event = (action = 'user.signed_in', extra = {}) => ({
  action,
  occurredAt: new Date('2024-01-02T03:04:05.678Z'),
  actor: { id: 'user_1', type: 'user', name: 'Jon Smith', metadata: { role: 'admin' } },
  targets: [{ id: 'team_1', type: 'team', name: 'Engineering' }],
  context: { location: '203.0.113.7', userAgent: 'node-test' },
  metadata: { request_id: 'req_1' },
  ...extra,
});

before(async () => {
  tk = await startTestkit();
  workos = sdk();
});
after(async () => {
  await tk.stop();
});
beforeEach(async () => {
  await tk.reset();
});

test('create event is stored exactly once', async () => {
  await workos.auditLogs.createEvent(tk.organizationId, event());
  const events = await tk.events();
  assert.equal(events.length, 1);
  assert.equal(events[0].event.action, 'user.signed_in');
  assert.equal(events[0].event.occurred_at, '2024-01-02T03:04:05.678Z');
  assert.equal(events[0].event.context.user_agent, 'node-test');
  assert.match(events[0].idempotency_key, /^workos-node-/);
});

test('the SDK retries two 500s (the first after storing) and one event is stored', async () => {
  await tk.fault({ path: '/audit_logs/events', method: 'POST', times: 2, action: { type: 'respond', status: 500 }, when: 'after' });
  await workos.auditLogs.createEvent(tk.organizationId, event());
  const events = await tk.events();
  assert.equal(events.length, 1);
  const reqs = (await tk.requests()).filter((r) => r.path === '/audit_logs/events');
  assert.deepEqual(reqs.map((r) => r.status), [500, 500, 200]);
  const keys = new Set(reqs.map((r) => r.headers.find(([k]) => k === 'idempotency-key')[1]));
  assert.equal(keys.size, 1, 'the same idempotency key on every attempt');
});

test('create and list schemas', async () => {
  const s1 = await workos.auditLogs.createSchema({
    action: 'invoice.paid',
    actor: { metadata: { role: 'string' } },
    targets: [{ type: 'invoice', metadata: { cost: 'number' } }],
    metadata: { transactionId: 'string' },
  });
  assert.equal(s1.object, 'audit_log_schema');
  assert.equal(s1.version, 1);
  assert.deepEqual(s1.targets, [{ type: 'invoice', metadata: { cost: 'number' } }]);
  const s2 = await workos.auditLogs.createSchema({
    action: 'invoice.paid',
    targets: [{ type: 'invoice', metadata: { cost: 'string' } }],
  });
  assert.equal(s2.version, 2);
  const list = await workos.auditLogs.listSchemas('invoice.paid');
  assert.deepEqual(list.data.map((s) => s.version), [2, 1]);
  const all = await list.autoPagination();
  assert.equal(all.length, 2);
});

test('list actions (Node 11 has no listActions: plain GET through the SDK client)', async () => {
  for (const a of ['a.one', 'a.two', 'a.three']) {
    await workos.auditLogs.createSchema({ action: a, targets: [{ type: 'team' }] });
  }
  const { data } = await workos.get('/audit_logs/actions', { query: { limit: 2, order: 'asc' } });
  assert.equal(data.object, 'list');
  assert.ok(data.data.length >= 1);
  assert.equal(data.data[0].object, 'audit_log_action');
});

test('export: create, poll to ready, download the CSV', async () => {
  await workos.auditLogs.createEvent(tk.organizationId, event('user.signed_in'));
  await workos.auditLogs.createEvent(tk.organizationId, event('user.signed_out'));
  const created = await workos.auditLogs.createExport({
    organizationId: tk.organizationId,
    rangeStart: new Date('2024-01-01T00:00:00Z'),
    rangeEnd: new Date('2024-02-01T00:00:00Z'),
    actions: ['user.signed_in'],
  });
  assert.equal(created.object, 'audit_log_export');
  assert.equal(created.state, 'pending');
  let exp = created;
  for (let i = 0; i < 50 && exp.state === 'pending'; i++) {
    await new Promise((r) => setTimeout(r, 100));
    exp = await workos.auditLogs.getExport(created.id);
  }
  assert.equal(exp.state, 'ready');
  assert.ok(exp.url.startsWith(`${tk.url}/_testkit/exports/`));
  const csv = await (await fetch(exp.url)).text();
  const lines = csv.trim().split('\n');
  assert.ok(lines[0].startsWith('action,occurred_at,actor_id,actor_type,actor_name,actor_metadata,context_location,context_user_agent,metadata,target_id_1'));
  assert.equal(lines.length, 2);
  assert.ok(lines[1].startsWith('user.signed_in,2024-01-02T03:04:05.678Z,user_1,user,Jon Smith,'));
});

test('retention get and set', async () => {
  const r0 = await workos.auditLogs.getOrganizationAuditLogsRetention({ id: tk.organizationId });
  assert.equal(r0.retentionPeriodInDays, 30);
  const r1 = await workos.auditLogs.updateOrganizationAuditLogsRetention({ id: tk.organizationId, retentionPeriod: '3_MONTHS' });
  assert.equal(r1.retentionPeriodInDays, 90);
  const r2 = await workos.auditLogs.getOrganizationAuditLogsRetention({ id: tk.organizationId });
  assert.equal(r2.retentionPeriodInDays, 90);
});

test('portal link', async () => {
  const { link } = await workos.adminPortal.generateLink({ organization: tk.organizationId, intent: 'audit_logs' });
  assert.ok(link.startsWith(`${tk.url}/portal?token=`));
  const page = await fetch(link);
  assert.equal(page.status, 200);
});

test('unknown organization is NotFoundException', async () => {
  await assert.rejects(workos.auditLogs.createEvent('org_unknown', event()), (e) => {
    assert.ok(e instanceof NotFoundException, e.name);
    assert.equal(e.status, 404);
    assert.match(e.requestID, /^req_/);
    assert.equal(e.message, "Organization not found: 'org_unknown'.");
    return true;
  });
});

test('invalid event is BadRequestException', async () => {
  const bad = event('user.signed_in', { metadata: { nested: { no: 1 } } });
  await assert.rejects(workos.auditLogs.createEvent(tk.organizationId, bad), (e) => {
    assert.ok(e instanceof BadRequestException, e.name);
    assert.equal(e.code, 'invalid_audit_log_event');
    assert.equal(e.errors[0].instancePath, '/metadata/nested');
    return true;
  });
  assert.equal((await tk.events()).length, 0);
});

test('21 targets is a BadRequestException like the other validation errors', async () => {
  const targets = Array.from({ length: 21 }, (_, i) => ({ id: `user_${i}`, type: 'user' }));
  await assert.rejects(workos.auditLogs.createEvent(tk.organizationId, event('team.members_invited', { targets })), (e) => {
    assert.ok(e instanceof BadRequestException, e.name);
    assert.equal(e.status, 400);
    assert.equal(e.code, 'invalid_audit_log_event');
    assert.equal(e.message, 'Invalid Audit Log event.');
    assert.deepEqual(e.errors.map((x) => x.instancePath), ['/targets']);
    return true;
  });
  assert.equal((await tk.events()).length, 0);
  // Twenty are fine.
  await workos.auditLogs.createEvent(tk.organizationId, event('team.members_invited', { targets: targets.slice(0, 20) }));
  assert.equal((await tk.events()).length, 1);
});

test('429 with Retry-After is RateLimitExceededException after the SDK retries', async () => {
  await tk.fault({
    path: '/audit_logs/events', method: 'POST', times: 4,
    action: { type: 'respond', status: 429, body: { message: 'Too many requests.', code: 'rate_limit_exceeded' }, retry_after: '1' },
  });
  await assert.rejects(workos.auditLogs.createEvent(tk.organizationId, event()), (e) => {
    assert.ok(e instanceof RateLimitExceededException, e.name);
    assert.equal(e.retryAfter, 1);
    return true;
  });
  assert.equal((await tk.requests()).length, 4);
});

test('a bad key is UnauthorizedException', async () => {
  await assert.rejects(sdk('not_a_secret_key').auditLogs.createEvent(tk.organizationId, event()), (e) => {
    assert.ok(e instanceof UnauthorizedException, e.name);
    return true;
  });
});
