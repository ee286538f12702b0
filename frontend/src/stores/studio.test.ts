import { afterEach, describe, expect, it, vi } from "vitest";
import { pruneTiles, useStudio, type Tiles } from "./studio";

const track = (id: string) => ({ id }) as unknown as MediaStreamTrack;

describe("tiles", () => {
  it("keep only tracks the SFU still offers, and drop emptied participants", () => {
    const tiles: Tiles = { ann: { camera: track("a1"), microphone: track("a2"), screen: track("a3") }, bo: { camera: track("b1") } };
    const out = pruneTiles(tiles, [
      { mid: "0", participant: "ann", source: "camera" },
      { mid: "1", participant: "ann", source: "microphone" },
    ]);
    expect(Object.keys(out)).toEqual(["ann"]);
    expect(Object.keys(out.ann)).toEqual(["camera", "microphone"]);
  });
});

describe("the joined camera and microphone", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("belong to the studio while joined and are stopped when it leaves", () => {
    class FakeSocket {
      static OPEN = 1;
      readyState = 0;
      sent: string[] = [];
      onopen = null;
      onmessage = null;
      onclose = null;
      send(m: string) {
        this.sent.push(m);
      }
      close() {}
    }
    class FakePeer {
      ontrack = null;
      addTransceiver() {}
      close() {}
    }
    vi.stubGlobal("WebSocket", FakeSocket);
    vi.stubGlobal("RTCPeerConnection", FakePeer);
    const stop = vi.fn();
    const tracks = [{ kind: "audio", stop }, { kind: "video", stop }];
    const media = { getTracks: () => tracks, getAudioTracks: () => [tracks[0]], getVideoTracks: () => [tracks[1]] } as unknown as MediaStream;

    useStudio.getState().join("b1", "t", media);
    expect(useStudio.getState().media).toBe(media);
    expect(stop).not.toHaveBeenCalled();

    useStudio.getState().leave();
    expect(stop).toHaveBeenCalledTimes(2);
    expect(useStudio.getState().media).toBeNull();
    expect(useStudio.getState().status).toBe("left");
  });
});
