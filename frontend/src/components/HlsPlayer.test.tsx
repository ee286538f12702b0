import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, render, waitFor } from "@testing-library/react";

const hls = vi.hoisted(() => ({ configs: [] as unknown[], sources: [] as string[] }));
vi.mock("hls.js", () => {
  class Hls {
    static isSupported = () => true;
    static Events = { MANIFEST_PARSED: "parsed", ERROR: "error", FRAG_LOADED: "frag" };
    static ErrorTypes = { NETWORK_ERROR: "net", MEDIA_ERROR: "media" };
    constructor(config: unknown) {
      hls.configs.push(config);
    }
    loadSource(src: string) {
      hls.sources.push(src);
    }
    attachMedia() {}
    on() {}
    destroy() {}
  }
  return { default: Hls };
});

import { HlsPlayer } from "./HlsPlayer";

HTMLMediaElement.prototype.play = () => Promise.resolve();

afterEach(() => {
  cleanup();
  hls.configs.length = 0;
  hls.sources.length = 0;
});

describe("the HLS player", () => {
  it("follows a low-latency show as closely as its playlist's part hold-back allows", async () => {
    render(<HlsPlayer src="/hls/b/index.m3u8" lowLatency />);
    await waitFor(() => expect(hls.sources).toEqual(["/hls/b/index.m3u8"]));
    // No liveSyncDuration of our own: hls.js would let it override PART-HOLD-BACK.
    expect(hls.configs).toEqual([{ lowLatencyMode: true }]);
  });

  it("plays an ordinary live playlist three segments behind", async () => {
    render(<HlsPlayer src="/hls/b/index.m3u8" />);
    await waitFor(() => expect(hls.configs).toEqual([{ lowLatencyMode: false, liveSyncDurationCount: 3 }]));
  });
});
