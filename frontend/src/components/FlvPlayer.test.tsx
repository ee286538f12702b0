import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, render, screen, waitFor } from "@testing-library/react";

const supported = vi.hoisted(() => ({ value: false }));
vi.mock("flv.js", () => ({
  default: {
    isSupported: () => supported.value,
    Events: { ERROR: "error" },
    createPlayer: () => ({ attachMediaElement() {}, load() {}, on() {}, play() {}, destroy() {} }),
  },
}));
vi.mock("hls.js", () => ({ default: { isSupported: () => false } }));

import { FlvPlayer } from "./FlvPlayer";

// jsdom has no media playback.
HTMLMediaElement.prototype.play = () => Promise.resolve();

afterEach(cleanup);

describe("the FLV player", () => {
  it("plays FLV where the browser can", async () => {
    supported.value = true;
    render(<FlvPlayer src="/live/b.flv" hls="/hls/b/index.m3u8" />);
    await new Promise((r) => setTimeout(r, 20));
    expect(screen.getByTestId("player").dataset.player).toBe("flv");
  });

  it("falls back to HLS where it cannot", async () => {
    supported.value = false;
    render(<FlvPlayer src="/live/b.flv" hls="/hls/b/index.m3u8" />);
    await waitFor(() => expect(screen.getByTestId("player").dataset.player).toBe("hls"));
  });
});
