// Debian's chromium as the e2e scripts launch it: a fake camera and microphone that need no
// permission prompt, and media that plays without a gesture.
import { chromium } from "playwright-core";

export const launch = () =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      "--no-sandbox",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });

// A <video>'s playback position, sampled twice: it must move forward.
export async function advancing(page, selector, what) {
  const deadline = Date.now() + 40_000;
  for (;;) {
    const a = await page.$eval(selector, (v) => v.currentTime).catch(() => 0);
    await page.waitForTimeout(1500);
    const b = await page.$eval(selector, (v) => v.currentTime).catch(() => 0);
    if (b > a && b > 0.5) return b;
    if (Date.now() > deadline) throw new Error(`${what}: currentTime stuck at ${b}`);
  }
}
