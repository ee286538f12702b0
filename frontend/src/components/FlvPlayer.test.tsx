import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, render, screen, waitFor } from "@testing-library/react";

const supported = vi.hoisted(() => ({ value: false }));
const flv = vi.hoisted(() => ({ created: [] as unknown[], attached: [] as unknown[], loaded: 0 }));
vi.mock("flv.js", () => ({
  default: {
    isSupported: () => supported.value,
    Events: { ERROR: "error" },
    createPlayer: (source: unknown, config: unknown) => {
      flv.created.push([source, config]);
      return {
        attachMediaElement: (v: unknown) => flv.attached.push(v),
        load: () => flv.loaded++,
        on() {},
        play() {},
        destroy() {},
      };
    },
  },
}));
vi.mock("hls.js", () => ({ default: { isSupported: () => false } }));

import { FlvPlayer } from "./FlvPlayer";

// jsdom has no media playback.
HTMLMediaElement.prototype.play = () => Promise.resolve();

afterEach(cleanup);

describe("the FLV player", () => {
  it("plays FLV where the browser can: a live player on the stream, in the video element", async () => {
    supported.value = true;
    render(<FlvPlayer src="/live/b.flv" hls="/hls/b/index.m3u8" />);
    await waitFor(() => expect(flv.loaded).toBe(1));
    expect(flv.created).toEqual([[{ type: "flv", isLive: true, url: "/live/b.flv" }, { enableStashBuffer: false }]]);
    const video = screen.getByTestId("player");
    expect(flv.attached).toEqual([video]);
    expect(video.dataset.player).toBe("flv");
  });

  it("falls back to HLS where it cannot", async () => {
    supported.value = false;
    render(<FlvPlayer src="/live/b.flv" hls="/hls/b/index.m3u8" />);
    await waitFor(() => expect(screen.getByTestId("player").dataset.player).toBe("hls"));
  });
});
