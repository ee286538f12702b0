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
try {
  const host = await (await browser.newContext({ viewport: { width: 1600, height: 1000 } })).newPage();
  host.setDefaultTimeout(T);

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
  await host.getByLabel("Record the show").check();
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
  await guest.goto(inviteUrl);
  await guest.getByLabel("Your name").fill("Gina Guest");
  await guest.getByRole("button", { name: "Join backstage" }).click();
  await guest.getByText("You are backstage").waitFor();

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
  await viewer.goto(`${base}/watch/${id}`);
  seen.watchTime = await advancing(viewer, '[data-testid="player"]', "the watch page");
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
  console.log(JSON.stringify({ ok: false, error: String(e), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
