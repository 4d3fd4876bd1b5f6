// Screenshots of every view at desktop and phone width, taken from a running
// `cspulse demo` (synthetic portfolio), into dashboards-client/screenshots/.
//
//   cargo build --release && npm run screenshots
//
// CSPULSE_BIN overrides the binary (default ../target/release/cspulse).
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

const demo = spawn(bin, ['demo', '--listen', `127.0.0.1:${port}`, '--accounts', '600', '--csms', '12', '--rate', '40'], {
  stdio: ['ignore', 'pipe', 'inherit'],
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
  // Let the history load and a few cadence ticks pass.
  await new Promise((r) => setTimeout(r, 15_000));
  const shots = [
    ['executive', urls.executive, '#executive'],
    ['manager', urls.manager, '#manager'],
    ['manager-drill', urls.manager, '#manager/csm-03'],
    ['analyst', urls.analyst, '#analyst'],
    ['csm', urls.csm, ''],
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
