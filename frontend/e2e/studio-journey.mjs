// The web studio end to end, in Debian chromium with a fake camera and microphone, against
// `castyard up` serving the built frontend: sign up, create a broadcast with a destination,
// open the studio, a guest joins from the invite link and is put on stage, the layout
// changes, the host goes live and shows a banner and a ticker, a viewer watches the HLS and chats with the studio, the host
// ends, and the recording plays from the library.
// Usage: node e2e/studio-journey.mjs <base URL> <rtmp port> <screenshot dir>
// Prints one JSON line of what it saw; exits non-zero on the first failed expectation.
import { advancing, launch } from "./browser.mjs";
import { mkdirSync } from "node:fs";

const [base, rtmpPort, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: studio-journey.mjs <base> <rtmp port> <screenshot dir>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const T = 30_000;
const seen = {};
const step = (name) => {
  seen.step = name;
};

const browser = await launch();
// Every page opened, for screenshots of where a failed run stopped.
const pages = {};
try {
  const host = await (await browser.newContext({ viewport: { width: 1600, height: 1000 } })).newPage();
  host.setDefaultTimeout(T);
  pages.host = host;

  step("sign up");
  await host.goto(`${base}/signup`);
  await host.getByLabel("Display name").fill("Hana Host");
  await host.getByLabel("Email").fill("hana@example.com");
  await host.getByLabel("Password").fill("correct horse battery");
  await host.getByRole("button", { name: "Sign up" }).click();
  await host.waitForURL(/\/broadcasts$/);

  step("bad input is shown and changes nothing");
  await host.getByLabel("New broadcast").fill("   ");
  await host.getByRole("button", { name: "Create broadcast" }).click();
  seen.createError = await host.getByRole("alert").innerText();
  if ((await host.getByRole("link", { name: "Open studio" }).count()) > 0) throw new Error("a blank broadcast was created");

  step("create a broadcast");
  await host.getByLabel("New broadcast").fill("Friday Show");
  await host.getByRole("button", { name: "Create broadcast" }).click();
  await host.waitForURL(/\/broadcasts\/[0-9a-f-]{36}$/);
  const id = host.url().split("/").pop();
  seen.broadcast = id;
  await host.getByLabel("Platform").selectOption("custom");
  await host.getByLabel("Name").fill("local");
  await host.getByLabel("Server URL").fill("http://not-rtmp.example.com/live");
  await host.getByLabel("Stream key").fill("journey-key-1");
  await host.getByRole("button", { name: "Add destination" }).click();
  seen.destinationError = await host.getByRole("alert").innerText();
  await host.getByLabel("Server URL").fill(`rtmp://127.0.0.1:${rtmpPort}/live`);
  await host.getByLabel("Stream key").fill("journey-key-1");
  await host.getByRole("button", { name: "Add destination" }).click();
  const masked = await host.getByLabel("Stream key (masked)").innerText();
  if (masked.includes("journey-key-1")) throw new Error(`the key is shown: ${masked}`);
  seen.maskedKey = masked;
  step("a signed-out visitor sees no console error on any page");
  {
    const visitor = await (await browser.newContext()).newPage();
    const errors = [];
    visitor.on("console", (m) => m.type() === "error" && errors.push(`${visitor.url()}: ${m.text().slice(0, 200)}`));
    visitor.on("pageerror", (e) => errors.push(`${visitor.url()}: ${String(e).slice(0, 200)}`));
    const paths = ["/", "/signin", "/signup", "/broadcasts", "/library", `/broadcasts/${id}`, `/studio/${id}`, `/join/${id}`, `/watch/${id}`, "/no-such-page"];
    for (const path of paths) {
      await visitor.goto(`${base}${path}`);
      await visitor.waitForLoadState("networkidle");
    }
    seen.signedOutPages = paths.length;
    if (errors.length) throw new Error(`console errors signed out: ${JSON.stringify(errors)}`);
    await visitor.context().close();
  }

  await host.getByLabel("Record the show").check();
  await host.getByLabel("Low-latency watch page").check();
  await host.getByRole("button", { name: "Save" }).click();
  await host.getByText("Saved").waitFor();

  step("open the studio");
  await host.getByRole("link", { name: "Open studio" }).click();
  await host.getByRole("button", { name: "Enter studio" }).click({ timeout: T });
  await host.getByTestId("person-Hana Host").waitFor();

  step("invite a guest");
  await host.getByRole("button", { name: "Create invite link" }).click();
  const inviteUrl = await host.getByTestId("invite-url").inputValue();
  const guest = await (await browser.newContext()).newPage();
  guest.setDefaultTimeout(T);
  pages.guest = guest;
  // What went wrong in the guest's page, to read beside a failed step.
  seen.guestErrors = [];
  guest.on("pageerror", (e) => seen.guestErrors.push(String(e).slice(0, 300)));
  guest.on("crash", () => seen.guestErrors.push("the page crashed"));
  guest.on("console", (m) => m.type() === "error" && seen.guestErrors.length < 20 && seen.guestErrors.push(m.text().slice(0, 160)));
  await guest.goto(inviteUrl);
  await guest.getByLabel("Your name").fill("Gina Guest");
  await guest.getByRole("button", { name: "Join backstage" }).click();
  await guest.getByText("You are backstage").waitFor();

  step("the guest waits backstage, seen by the host");
  await host.getByRole("region", { name: "Backstage" }).getByTestId("tile-Gina Guest").locator("video").waitFor();

  step("put the guest on stage");
  await host.getByRole("button", { name: "Add Gina Guest to stage" }).click();
  const tile = host.getByRole("region", { name: "Stage" }).getByTestId("tile-Gina Guest");
  await tile.waitFor();
  await host.waitForFunction(
    () => {
      const v = document.querySelector('[data-testid="tile-Gina Guest"] video');
      return v && v.videoWidth > 0 && v.currentTime > 0;
    },
    null,
    { timeout: T },
  );
  seen.guestOnStage = true;
  // The guest sees themselves on stage too.
  await guest.getByRole("region", { name: "Stage" }).getByTestId("tile-Gina Guest").waitFor();

  step("the guest blurs, then replaces, their background");
  // In the browser, MediaPipe's selfie segmentation (served by Castyard) composes the camera on a
  // canvas whose track replaces the one sent: the host, through the SFU, must see the change.
  const sent = guest.getByRole("toolbar", { name: "Your media" }).locator('video[aria-label="Your camera as sent"]');
  const sharpness = () =>
    sent.evaluate((v) => {
      // Squared luminance steps between neighbours: a blur spreads each edge and lowers it.
      const c = document.createElement("canvas");
      c.width = 160;
      c.height = 90;
      const g = c.getContext("2d");
      g.drawImage(v, 0, 0, 160, 90);
      const d = g.getImageData(0, 0, 160, 90).data;
      let e = 0;
      let green = 0;
      for (let i = 4; i < d.length; i += 4) {
        const l = (p) => 0.3 * d[p] + 0.59 * d[p + 1] + 0.11 * d[p + 2];
        if (i % (160 * 4) !== 0) e += (l(i) - l(i - 4)) ** 2;
        green += d[i + 1];
      }
      return { e, green: green / (160 * 90) };
    });
  await guest.waitForFunction(() => document.querySelector('video[aria-label="Your camera as sent"]')?.videoWidth > 0);
  // The fake camera's picture moves, and so does its edge energy: the median of five looks.
  const looks = [];
  for (let i = 0; i < 5; i++) {
    looks.push((await sharpness()).e);
    await guest.waitForTimeout(200);
  }
  const sharp = looks.sort((a, b) => a - b)[2];
  await guest.getByLabel("Background", { exact: true }).selectOption("blur");
  for (const deadline = Date.now() + T; ; ) {
    // A black frame (the effect's track before its first picture) has no edges either.
    const now = await sharpness();
    seen.blur = { sharp: Math.round(sharp), blurred: Math.round(now.e), green: Math.round(now.green) };
    // Whatever the segmenter takes for a person stays sharp, and how much that is varies with
    // the picture and the load: a third of the edge energy gone is a blur, a no-op is not.
    if (now.e < (sharp * 2) / 3 && now.green > 60) break;
    if (Date.now() > deadline) throw new Error(`the camera was not blurred: ${JSON.stringify(seen.blur)}`);
    await guest.waitForTimeout(500);
  }
  // A magenta picture (1x1 PNG, stretched to cover the frame) behind an empty room: the fake
  // camera shows no person, so the corner of the guest's tile at the host turns magenta.
  const magenta = Buffer.from(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154789c63f8cff01f00040001ff220a3af00000000049454e44ae426082",
    "hex",
  );
  const cornerAtHost = (want) =>
    host.waitForFunction(
      (want) => {
        const v = document.querySelector('[data-testid="tile-Gina Guest"] video');
        if (!v || !v.videoWidth) return false;
        const c = document.createElement("canvas");
        c.width = 64;
        c.height = 36;
        const g = c.getContext("2d");
        g.drawImage(v, 0, 0, 64, 36);
        const [r, gr, b] = g.getImageData(4, 4, 1, 1).data;
        const ok = want === "magenta" ? r > 150 && b > 150 && gr < 100 : gr > 60 && gr > 1.5 * r && gr > 1.5 * b;
        return ok && [r, gr, b];
      },
      want,
      { timeout: T, polling: 250 },
    ).then((h) => h.jsonValue());
  await guest.getByLabel("Background", { exact: true }).selectOption("image");
  await guest.getByLabel("Background picture").setInputFiles({ name: "magenta.png", mimeType: "image/png", buffer: magenta });
  seen.pictureAtHost = await cornerAtHost("magenta");
  await guest.getByLabel("Background", { exact: true }).selectOption("none");
  seen.cameraAtHost = await cornerAtHost("green");

  step("simulcast: three layers sent, the host gets the one its tile needs");
  // The studio publishes the camera as three simulcast layers; each viewer's tile size is
  // reported to the SFU, which forwards the smallest layer that covers it.
  seen.layers = await guest.evaluate(async () => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const out = [];
      (await window.castyardPc.getStats()).forEach((r) => {
        if (r.type === "outbound-rtp" && r.kind === "video" && r.rid) out.push({ rid: r.rid, frames: r.framesEncoded ?? 0, height: r.frameHeight ?? 0 });
      });
      out.sort((a, b) => a.rid.localeCompare(b.rid));
      if (out.length === 3 && out.every((l) => l.frames > 0)) return out;
      if (Date.now() > deadline) return out;
      await new Promise((ok) => setTimeout(ok, 500));
    }
  });
  seen.hostTile = await host.evaluate(async () => {
    const v = document.querySelector('[data-testid="tile-Gina Guest"] video');
    const shown = { width: v.clientWidth, height: v.clientHeight };
    // Long enough for the SFU to have moved up to a bigger layer (it switches at the next
    // keyframe, every 2 s) had the tile's size not held it to the small one.
    await new Promise((ok) => setTimeout(ok, 8000));
    let received = 0;
    (await window.castyardPc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video" && (r.framesDecoded ?? 0) > 0) received = Math.max(received, r.frameHeight ?? 0);
    });
    return { shown, received };
  });

  step("switch the layout");
  await host.getByRole("button", { name: "spotlight" }).click();
  await host.waitForSelector('button[aria-pressed="true"]:has-text("spotlight")');
  seen.layout = "spotlight";

  step("go live");
  await host.getByRole("button", { name: "Go live" }).click();
  await host.getByTestId("destination-local").getByText("Live").waitFor({ timeout: 60_000 });
  seen.destination = await host.getByTestId("destination-local").innerText();

  step("show a banner");
  await host.getByLabel("Banner text").fill("Welcome to Friday Show");
  await host.getByRole("radio", { name: "Lower third" }).check();
  await host.getByRole("button", { name: "Show banner" }).click();
  seen.banner = await host.getByTestId("on-screen-banner").innerText();
  await host.getByLabel("Ticker text").fill("Questions? Ask in the chat");
  await host.getByRole("button", { name: "Run ticker" }).click();
  await host.getByRole("button", { name: "Stop ticker" }).waitFor();
  await host.waitForSelector('button:has-text("Stop ticker"):not([disabled])');

  step("put a logo on the show");
  // A 1x1 PNG, uploaded to the host's library and drawn by the compositor from there.
  const png = Buffer.from(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478" +
      "9c6300010000050001 0d0a2db40000000049454e44ae426082".replace(" ", ""),
    "hex",
  );
  await host.getByLabel("Logo (PNG or JPEG)").setInputFiles({ name: "logo.png", mimeType: "image/png", buffer: png });
  await host.getByRole("button", { name: "Remove logo" }).waitFor();

  step("the guest is in the composed show");
  // The compositor follows the SFU's stage: the guest is on its stage with the camera on.
  seen.scene = await host.evaluate(async (id) => {
    const { accessToken } = await (await fetch("/api/auth/refresh", { method: "POST" })).json();
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await fetch(`/api/broadcasts/${id}/scene`, { headers: { authorization: `Bearer ${accessToken}` } });
      const scene = r.ok ? await r.json() : null;
      const onStage = scene ? scene.stage.map((p) => scene.participants[p]) : [];
      const gina = onStage.find((p) => p.name === "Gina Guest");
      if (gina && gina.video) return { stage: onStage.map((p) => p.name), layout: scene.layout, logo: scene.brand.logo };
      if (Date.now() > deadline) throw new Error(`the guest never reached the show: ${JSON.stringify(scene)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }, id);

  step("a viewer watches");
  const viewer = await (await browser.newContext()).newPage();
  viewer.setDefaultTimeout(T);
  // Low-latency HLS: hls.js should fetch parts and hold playlist requests open (blocking reload).
  const hlsRequests = { parts: 0, blocking: 0 };
  viewer.on("request", (r) => {
    if (/\/hls\/[^/]+\/p\d+\.m4s$/.test(r.url())) hlsRequests.parts++;
    if (/index\.m3u8\?.*_HLS_msn=/.test(r.url())) hlsRequests.blocking++;
  });
  await viewer.goto(`${base}/watch/${id}`);
  seen.watchTime = await advancing(viewer, '[data-testid="player"]', "the watch page");
  seen.hlsRequests = hlsRequests;
  // The guest's camera (Chrome's fake one is green) fills the middle of the show the viewer
  // sees, not the compositor's dark "Reconnecting…" placeholder; HLS runs some seconds behind.
  seen.showPixel = await viewer.evaluate(async () => {
    const v = document.querySelector('[data-testid="player"]');
    const c = document.createElement("canvas");
    c.width = 64;
    c.height = 36;
    const g = c.getContext("2d");
    const deadline = Date.now() + 30_000;
    for (;;) {
      g.drawImage(v, 0, 0, 64, 36);
      const [r, gr, b] = g.getImageData(32, 18, 1, 1).data;
      if (gr > 60 && gr > 1.5 * r && gr > 1.5 * b) return [r, gr, b];
      if (Date.now() > deadline) throw new Error(`the guest's camera never showed in the show: rgb ${r},${gr},${b}`);
      await new Promise((ok) => setTimeout(ok, 500));
    }
  });

  // How far behind the playlist's live edge the viewer plays, once settled.
  seen.behindLive = await viewer.evaluate(() => {
    const v = document.querySelector('[data-testid="player"]');
    return v.seekable.length ? v.seekable.end(v.seekable.length - 1) - v.currentTime : null;
  });
  step("chat crosses the studio and the watch page");
  await viewer.getByLabel("Your name").fill("Vic Viewer");
  await viewer.getByRole("button", { name: "Chat" }).click();
  const viewerChat = viewer.getByRole("region", { name: "Live chat" });
  await viewerChat.getByLabel("Message").fill("hello from the audience");
  await viewerChat.getByRole("button", { name: "Send" }).click();
  const audience = host.getByRole("region", { name: "Audience chat" });
  await audience.getByText("hello from the audience").waitFor();
  await audience.getByLabel("Message").fill("welcome, Vic!");
  await audience.getByRole("button", { name: "Send" }).click();
  await viewerChat.getByText("welcome, Vic!").waitFor();
  const studioChat = host.getByRole("region", { name: "Studio chat" });
  await studioChat.getByLabel("Message").fill("30 seconds to the break");
  await studioChat.getByRole("button", { name: "Send" }).click();
  await guest.getByRole("region", { name: "Studio chat" }).getByText("30 seconds to the break").waitFor();
  if ((await viewerChat.getByText("30 seconds to the break").count()) > 0) throw new Error("studio chat leaked to viewers");
  seen.chat = true;
  // From the top, as a host first sees it (the steps above scrolled down to the controls).
  await host.evaluate(() => window.scrollTo(0, 0));
  await host.screenshot({ path: `${shots}/studio.png` });
  await viewer.screenshot({ path: `${shots}/watch.png` });

  step("end the broadcast");
  await host.getByRole("button", { name: "End broadcast" }).click();
  await viewer.getByTestId("ended").waitFor({ timeout: 60_000 });

  step("the recording is in the library and plays");
  await host.goto(`${base}/library`);
  const deadline = Date.now() + 60_000;
  while ((await host.getByTestId("recording").count()) === 0) {
    if (Date.now() > deadline) throw new Error("the recording never appeared in the library");
    await host.waitForTimeout(1000);
    await host.reload();
  }
  seen.recording = await host.getByTestId("recording").first().innerText();
  await host.getByRole("button", { name: "Play Friday Show" }).click();
  seen.recordingTime = await advancing(host, 'video[aria-label="Recording: Friday Show"]', "the recording");
  await host.screenshot({ path: `${shots}/library.png` });
  delete seen.step;
  console.log(JSON.stringify({ ok: true, ...seen }));
} catch (e) {
  for (const [name, page] of Object.entries(pages)) await page.screenshot({ path: `${shots}/failed-${name}.png`, timeout: 5000 }).catch(() => {});
  console.log(JSON.stringify({ ok: false, error: String(e), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
