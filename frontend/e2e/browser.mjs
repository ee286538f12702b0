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
