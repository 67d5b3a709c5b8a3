// Spawns the audit-testkit binary (AUDIT_TESTKIT_BIN) on a free port; its first stdout line is
// `{"url":...,"organization_id":...}` (the same pattern as sdk-tests/node/testkit.mjs).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export async function startTestkit(args = []) {
  const bin = process.env.AUDIT_TESTKIT_BIN;
  if (!bin) throw new Error('set AUDIT_TESTKIT_BIN to the absolute path of the audit-testkit binary');
  const child = spawn(bin, ['--addr', '127.0.0.1:0', '--export-delay', '300ms', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const rl = createInterface({ input: child.stdout });
  const first = await new Promise((resolve, reject) => {
    rl.once('line', resolve);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`audit-testkit exited early with ${code}`)));
  });
  // Keep draining stdout so the child never blocks on a full pipe.
  rl.on('line', () => {});
  const { url, organization_id: organizationId } = JSON.parse(first);
  return {
    url,
    organizationId,
    async events(org = organizationId) {
      const r = await fetch(`${url}/_testkit/events?organization_id=${encodeURIComponent(org)}`);
      return (await r.json()).data;
    },
    stop() {
      if (child.exitCode !== null) return Promise.resolve();
      return new Promise((resolve) => {
        child.once('exit', resolve);
        child.kill('SIGTERM');
      });
    },
  };
}
