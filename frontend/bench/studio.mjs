// The studio route's weight and speed beside a blank Vite React page built in the same run:
// the gzip size of the JavaScript each loads, and the time from navigation to its first
// render (its heading in the DOM: the broadcast's title for the studio) in headless chromium,
// median of several cold loads. The API is
// answered in the browser (a signed-in host, a broadcast backstage), so only the frontend is
// measured. Usage: npm run build && node bench/studio.mjs
import { build } from "vite";
import react from "@vitejs/plugin-react";
import { createServer } from "node:http";
import { gzipSync } from "node:zlib";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { extname, join, resolve } from "node:path";
import { launch } from "../e2e/browser.mjs";

const RUNS = 7;
const TARGET_KB = 300;
const here = resolve(import.meta.dirname, "..");
const dist = join(here, "dist");
if (!existsSync(join(dist, "index.html"))) {
  console.error("frontend/dist is missing: run `npm run build` first");
  process.exit(2);
}

// The reference: the smallest React page Vite builds, with the same React and plugin.
const blankRoot = join(here, "node_modules", ".bench-blank");
rmSync(blankRoot, { recursive: true, force: true });
mkdirSync(blankRoot, { recursive: true });
writeFileSync(
  join(blankRoot, "index.html"),
  '<!doctype html><html><body><div id="root"></div><script type="module" src="/main.jsx"></script></body></html>',
);
writeFileSync(
  join(blankRoot, "main.jsx"),
  'import { createRoot } from "react-dom/client";\ncreateRoot(document.getElementById("root")).render(<h1>Blank</h1>);\n',
);
await build({ root: blankRoot, plugins: [react()], logLevel: "error", build: { outDir: join(blankRoot, "dist") } });

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml" };
// A static server with the SPA fallback `castyard` has: unknown paths get index.html.
function serve(root) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = join(root, path);
    if (!file.startsWith(root) || !existsSync(file) || statSync(file).isDirectory()) file = join(root, "index.html");
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    res.end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

const broadcast = {
  id: "b1", title: "Bench show", description: "", state: "Backstage", phase: "Backstage", recording: false,
  layout: "grid", maxGuests: 10, destinations: [], destinationStatus: [], endpoints: null,
};
async function answerApi(route) {
  const url = new URL(route.request().url());
  const json = (body, status = 200) => route.fulfill({ status, contentType: "application/json", body: JSON.stringify(body) });
  if (url.pathname === "/api/auth/refresh")
    return json({ accessToken: "bench", expiresIn: 900, user: { id: "u1", displayName: "Bench Host", role: "host", createdAt: "2026-01-01T00:00:00Z" } });
  if (url.pathname === "/api/broadcasts/b1") return json(broadcast);
  return json({ error: { code: "not_found", message: "not here" } }, 404);
}

// Navigation start to an <h1> reading `heading` in the DOM, and every script the page loaded.
async function load(browser, base, path, heading, api) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  if (api) await page.route("**/api/**", api);
  await page.addInitScript((heading) => {
    new MutationObserver((_, obs) => {
      if ([...document.querySelectorAll("h1")].some((h) => h.textContent === heading)) {
        window.__firstRender = performance.now();
        obs.disconnect();
      }
    }).observe(document, { childList: true, subtree: true, characterData: true });
  }, heading);
  const scripts = new Set();
  page.on("response", (r) => {
    if (r.request().resourceType() === "script") scripts.add(new URL(r.url()).pathname);
  });
  await page.goto(base + path);
  await page.waitForFunction(() => window.__firstRender !== undefined, null, { timeout: 30_000 });
  const ms = await page.evaluate(() => window.__firstRender);
  await ctx.close();
  return { ms, scripts: [...scripts] };
}

const gzipKb = (root, scripts) =>
  scripts.reduce((sum, s) => sum + gzipSync(readFileSync(join(root, s)), { level: 9 }).length, 0) / 1024;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const studioServer = await serve(dist);
const blankServer = await serve(join(blankRoot, "dist"));
const studioBase = `http://127.0.0.1:${studioServer.address().port}`;
const blankBase = `http://127.0.0.1:${blankServer.address().port}`;
const browser = await launch();
try {
  const studio = [];
  const blank = [];
  // Interleaved, so both see the same machine load.
  for (let i = 0; i < RUNS; i++) {
    studio.push(await load(browser, studioBase, "/studio/b1", broadcast.title, answerApi));
    blank.push(await load(browser, blankBase, "/", "Blank", null));
  }
  const studioKb = gzipKb(dist, studio[0].scripts);
  const blankKb = gzipKb(join(blankRoot, "dist"), blank[0].scripts);
  const [s, b] = [median(studio.map((r) => r.ms)), median(blank.map((r) => r.ms))];
  console.log(`studio route: ${studio[0].scripts.length} scripts, ${studioKb.toFixed(1)} KB gzip (target < ${TARGET_KB} KB); blank Vite React page: ${blankKb.toFixed(1)} KB gzip`);
  console.log(`ratio: the studio route loads ${(studioKb / blankKb).toFixed(2)}x the blank page's JavaScript`);
  console.log(`first render, median of ${RUNS} cold loads: studio ${s.toFixed(0)} ms, blank ${b.toFixed(0)} ms, ratio ${(s / b).toFixed(2)}x`);
  // Not part of the route: fetched when someone first turns on blur or a virtual background.
  const effect = ["selfie_segmentation.js", "selfie_segmentation_solution_simd_wasm_bin.js", "selfie_segmentation_solution_simd_wasm_bin.wasm", "selfie_segmentation_landscape.tflite", "selfie_segmentation.binarypb"];
  console.log(`background effect (loaded on first use, not counted): ${gzipKb(join(dist, "mediapipe"), effect).toFixed(0)} KB gzip`);
  if (studioKb >= TARGET_KB) process.exitCode = 1;
} finally {
  await browser.close();
  studioServer.close();
  blankServer.close();
  rmSync(blankRoot, { recursive: true, force: true });
}
