// The watch page of a live OBS ingest: it plays over HTTP-FLV (flv.js), not HLS, and the
// video advances. Usage: node e2e/ingest-watch.mjs <base URL> <broadcast id>
// Prints one JSON line of what it saw; exits non-zero on the first failed expectation.
import { advancing, launch } from "./browser.mjs";

const [base, id] = process.argv.slice(2);
if (!id) {
  console.error("usage: ingest-watch.mjs <base> <broadcast id>");
  process.exit(2);
}
const browser = await launch();
// On failure the player's state and the page's console go into the report.
const logs = [];
let page;
try {
  page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(30_000);
  const flv = [];
  page.on("console", (m) => logs.length < 30 && logs.push(m.text().slice(0, 200)));
  page.on("request", (r) => r.url().endsWith(".flv") && flv.push(new URL(r.url()).pathname));
  await page.goto(`${base}/watch/${id}`);
  await page.waitForSelector('video[data-player="flv"]');
  const time = await advancing(page, '[data-testid="player"]', "the FLV player");
  const player = await page.$eval('[data-testid="player"]', (v) => v.dataset.player);
  const size = await page.$eval('[data-testid="player"]', (v) => [v.videoWidth, v.videoHeight]);
  console.log(JSON.stringify({ ok: true, player, time, size, flv }));
} catch (e) {
  const probe = (v) => ({
    readyState: v.readyState,
    error: v.error?.message,
    buffered: [...Array(v.buffered.length)].map((_, i) => [v.buffered.start(i), v.buffered.end(i)]),
    paused: v.paused,
    player: v.dataset.player,
  });
  const state = page ? await page.$eval('[data-testid="player"]', probe).catch((x) => String(x)) : null;
  console.log(JSON.stringify({ ok: false, error: String(e), state, logs }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
