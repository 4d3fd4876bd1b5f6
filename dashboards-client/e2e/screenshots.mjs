// Screenshots of every view at desktop and phone width, taken from a running
// `cspulse demo` (synthetic portfolio), into dashboards-client/screenshots/.
//
//   cargo build --release && npm run screenshots
//
// CSPULSE_BIN overrides the binary (default ../target/release/cspulse);
// CSPULSE_HISTORY_DAYS the days of history the demo makes first (default 126:
// the 18 weeks an account's detail shows).
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DESKTOP, PHONE, launch } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.CSPULSE_BIN || resolve(here, '../../target/release/cspulse');
const out = resolve(here, '../screenshots');
const port = 18000 + Math.floor(Math.random() * 1000);
mkdirSync(out, { recursive: true });

const historyDays = process.env.CSPULSE_HISTORY_DAYS || '126';
const demo = spawn(bin, ['demo', '--listen', `127.0.0.1:${port}`, '--accounts', '600', '--csms', '12', '--rate', '40', '--history-days', historyDays], {
  stdio: ['ignore', 'pipe', 'inherit'],
  // Event-time alignment, so the history the demo makes first is folded in event-time order.
  env: { ...process.env, CSPULSE__TIME__ALIGN_WAIT: process.env.CSPULSE__TIME__ALIGN_WAIT || '50ms' },
});
const urls = await new Promise((ok, fail) => {
  let text = '';
  const timer = setTimeout(() => fail(new Error(`no banner from ${bin}`)), 60_000);
  demo.stdout.on('data', (d) => {
    text += d;
    const found = Object.fromEntries(
      [...text.matchAll(/^\s+(executive|manager|analyst|csm|wall)\s+(http\S+)$/gm)].map((m) => [m[1], m[2]]),
    );
    if (Object.keys(found).length === 5) {
      clearTimeout(timer);
      ok(found);
    }
  });
  demo.on('exit', (c) => fail(new Error(`demo exited ${c}`)));
});

const browser = await launch();
try {
  // Wait until the demo's history is folded and written, then a few cadence ticks.
  // (The demo produces its history after the banner: wait to see rows pending first.)
  const started = Date.now();
  let written = false;
  for (;;) {
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.json()).catch(() => null);
    written ||= (ready?.history?.pending_rows ?? 0) > 0 || (ready?.lag ?? 0) > 0;
    if (written && ready?.ready && ready.lag === 0 && ready.history?.pending_rows === 0) break;
    if (Date.now() - started > 600_000) throw new Error(`the demo is not ready after 10 min: ${JSON.stringify(ready)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  console.log(`demo ready after ${Math.round((Date.now() - started) / 1000)} s`);
  await new Promise((r) => setTimeout(r, 5000));
  const shots = [
    ['executive', urls.executive, '#executive'],
    ['manager', urls.manager, '#manager'],
    ['manager-drill', urls.manager, '#manager/csm-03'],
    ['analyst', urls.analyst, '#analyst'],
    ['csm', urls.csm, ''],
    ['explorer', urls.analyst, '#accounts?tier=red&tier=yellow&renewal_within=180d&sort=-revenue.arr&cols=account_id,info.name,info.csm_id,info.segment,health.tier,health.score,revenue.arr,revenue.days_to_renewal,usage.active_users_30d,tickets.open,alerts.critical&dist=health.score&buckets=20'],
    ['drill', urls.executive, '#accounts?tier=red&sort=-revenue.arr&from=executive&scope=portfolio&metric=health.at_risk_arr'],
    ['wall', urls.wall, ''],
  ];
  for (const [name, url, hash] of shots) {
    for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
      if (name === 'wall' && size === 'phone') continue;
      const page = await browser.context.newPage();
      await page.setViewportSize(viewport);
      await page.goto(url + hash);
      await page.waitForSelector('body[data-ready="1"]', { timeout: 30_000 });
      if (name === 'csm') {
        await page.waitForTimeout(500);
        await page.click('tr[data-account]');
        await page.waitForSelector('[data-weeks] .week', { timeout: 30_000 });
      }
      if (name === 'explorer' || name === 'drill') {
        await page.waitForSelector(name === 'drill' ? '[data-drill-check][data-loading="false"]' : '[data-bucket]', { timeout: 30_000 });
      }
      if (name === 'executive' || name === 'wall') {
        await page.waitForFunction(() => window.__cspulse.trends().url !== null, null, { timeout: 30_000 });
      }
      await page.waitForTimeout(name === 'executive' || name === 'wall' ? 6000 : 1500);
      const file = join(out, `${name}-${size}.png`);
      await page.screenshot({ path: file, fullPage: size === 'phone' });
      console.log(`wrote ${file}`);
      await page.close();
    }
  }
} finally {
  await browser.close();
  demo.kill('SIGTERM');
}
