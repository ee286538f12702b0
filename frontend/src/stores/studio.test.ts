import { afterEach, describe, expect, it, vi } from "vitest";
import { pruneTiles, useStudio, type Tiles } from "./studio";
import { startEffect } from "../media/background";

// The segmentation itself needs WebGL and a camera: it is exercised in the browser journey.
vi.mock("../media/background", () => ({ startEffect: vi.fn() }));

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

class FakeSocket {
  static OPEN = 1;
  static last: FakeSocket | null = null;
  constructor() {
    FakeSocket.last = this;
  }
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

/** The senders the studio made, by kind of the track they started with. */
const senders: Record<string, { track: unknown; replaceTrack: ReturnType<typeof vi.fn>; init?: RTCRtpTransceiverInit }> = {};
class FakePeer {
  static last: FakePeer | null = null;
  ontrack: ((e: unknown) => void) | null = null;
  setRemoteDescription = async () => {};
  constructor() {
    FakePeer.last = this;
  }
  addTransceiver(track: MediaStreamTrack, init?: RTCRtpTransceiverInit) {
    const sender = { track: track as unknown, init, replaceTrack: vi.fn(async (t: unknown) => void (sender.track = t)) };
    senders[track.kind] = sender;
    return { sender };
  }
  close() {}
}

function joinWithFakes() {
  vi.stubGlobal("WebSocket", FakeSocket);
  vi.stubGlobal("RTCPeerConnection", FakePeer);
  vi.stubGlobal("MediaStream", class {
    constructor(public tracks: unknown[]) {}
  });
  const stop = vi.fn();
  const tracks = [{ kind: "audio", stop }, { kind: "video", stop, enabled: true }];
  const media = { getTracks: () => tracks, getAudioTracks: () => [tracks[0]], getVideoTracks: () => [tracks[1]] } as unknown as MediaStream;
  useStudio.getState().join("b1", "t", media);
  return { media, stop, camera: tracks[1] };
}

describe("the joined camera and microphone", () => {
  afterEach(() => {
    useStudio.getState().leave();
    vi.unstubAllGlobals();
  });

  it("belong to the studio while joined and are stopped when it leaves", () => {
    const { media, stop } = joinWithFakes();
    expect(useStudio.getState().media).toBe(media);
    expect(stop).not.toHaveBeenCalled();
    // The camera goes out in the SFU's three simulcast layers; the microphone as it is.
    expect(senders.video.init?.sendEncodings?.map((e) => e.rid)).toEqual(["q", "h", "f"]);
    expect(senders.audio.init?.sendEncodings).toBeUndefined();

    useStudio.getState().leave();
    expect(stop).toHaveBeenCalledTimes(2);
    expect(useStudio.getState().media).toBeNull();
    expect(useStudio.getState().status).toBe("left");
  });
});

describe("received video", () => {
  afterEach(() => {
    useStudio.getState().leave();
    vi.unstubAllGlobals();
  });

  it("is reported to the SFU at the size it is shown, hidden until a tile shows it", async () => {
    joinWithFakes();
    const sock = FakeSocket.last!;
    sock.readyState = 1;
    (sock.onmessage as unknown as (e: { data: string }) => void)({
      data: JSON.stringify({ type: "answer", sdp: "", tracks: [{ mid: "3", participant: "ann", source: "camera" }] }),
    });
    await new Promise((r) => setTimeout(r, 0));
    const track = { kind: "video", id: "t3" } as unknown as MediaStreamTrack;
    FakePeer.last!.ontrack!({ track, transceiver: { mid: "3" } });
    const views = () => sock.sent.map((m) => JSON.parse(m)).filter((m) => m.type === "view");
    expect(views()).toEqual([{ type: "view", mid: "3", width: 0, height: 0 }]);
    useStudio.getState().view(track, 320.4, 180.2);
    useStudio.getState().view(track, 320, 180);
    expect(views()).toEqual([
      { type: "view", mid: "3", width: 0, height: 0 },
      { type: "view", mid: "3", width: 320, height: 180 },
    ]);
    expect(useStudio.getState().tiles.ann.camera).toBe(track);
  });
});

describe("a studio that says goodbye", () => {
  afterEach(() => {
    useStudio.getState().leave();
    vi.unstubAllGlobals();
    vi.useRealTimers();
  });

  it("for a newer connection of the same person is final: no reconnection, the camera off", async () => {
    vi.useFakeTimers();
    const { stop } = joinWithFakes();
    const sock = FakeSocket.last!;
    sock.readyState = 1;
    const deliver = (m: unknown) => (sock.onmessage as unknown as (e: { data: string }) => void)({ data: JSON.stringify(m) });
    deliver({ type: "bye", reason: "replaced by a newer connection" });
    await vi.runAllTimersAsync();
    (sock.onclose as unknown as (e: { code: number; reason: string }) => void)({ code: 1000, reason: "" });
    await vi.advanceTimersByTimeAsync(30_000);
    expect(FakeSocket.last).toBe(sock);
    expect(useStudio.getState().status).toBe("left");
    expect(useStudio.getState().error).toBe("The studio ended this connection: replaced by a newer connection");
    expect(stop).toHaveBeenCalledTimes(2);
  });

  it("of a closing studio is retried, and given up once the studio stays unreachable", async () => {
    vi.useFakeTimers();
    const { stop } = joinWithFakes();
    let sock = FakeSocket.last!;
    sock.readyState = 1;
    (sock.onmessage as unknown as (e: { data: string }) => void)({ data: JSON.stringify({ type: "bye", reason: "the studio closed" }) });
    await vi.runAllTimersAsync();
    // Each attempt is refused before it opens (the broadcast has ended).
    for (let i = 0; i < 7; i++) {
      (sock.onclose as unknown as (e: { code: number; reason: string }) => void)({ code: 1006, reason: "" });
      expect(useStudio.getState().status).toBe("reconnecting");
      await vi.advanceTimersByTimeAsync(10_000);
      expect(FakeSocket.last).not.toBe(sock);
      sock = FakeSocket.last!;
    }
    (sock.onclose as unknown as (e: { code: number; reason: string }) => void)({ code: 1006, reason: "" });
    expect(useStudio.getState().status).toBe("left");
    expect(useStudio.getState().error).toMatch(/cannot be reached/);
    expect(stop).toHaveBeenCalledTimes(2);
  });

  it("is joined again after a plain network drop", async () => {
    vi.useFakeTimers();
    joinWithFakes();
    const sock = FakeSocket.last!;
    (sock.onclose as unknown as (e: { code: number; reason: string }) => void)({ code: 1006, reason: "" });
    expect(useStudio.getState().status).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(1_000);
    expect(FakeSocket.last).not.toBe(sock);
  });
});

describe("the background effect", () => {
  afterEach(() => {
    useStudio.getState().leave();
    vi.unstubAllGlobals();
    vi.mocked(startEffect).mockReset();
  });

  const fakeEffect = () => ({ track: { kind: "video", enabled: true }, set: vi.fn(async () => {}), stop: vi.fn() });

  it("sends the composed camera in place of the camera, on the same sender, and puts it back", async () => {
    const { media, camera } = joinWithFakes();
    const effect = fakeEffect();
    vi.mocked(startEffect).mockResolvedValue(effect as never);

    await useStudio.getState().setBackground({ kind: "blur" });
    expect(startEffect).toHaveBeenCalledWith(camera, { kind: "blur" });
    expect(senders.video.track).toBe(effect.track);
    expect(senders.audio.replaceTrack).not.toHaveBeenCalled();
    expect(useStudio.getState().background).toEqual({ kind: "blur" });
    expect(useStudio.getState().preview).not.toBe(media);

    // Changing the kind of background reuses the running segmenter.
    await useStudio.getState().setBackground({ kind: "image", url: "blob:x" });
    expect(effect.set).toHaveBeenCalledWith({ kind: "image", url: "blob:x" });
    expect(startEffect).toHaveBeenCalledTimes(1);

    // Camera off turns off what is actually sent.
    useStudio.getState().setCamera(true);
    expect(effect.track.enabled).toBe(false);

    await useStudio.getState().setBackground({ kind: "none" });
    expect(senders.video.track).toBe(camera);
    expect(effect.stop).toHaveBeenCalled();
    expect(useStudio.getState().preview).toBe(media);
  });

  it("reports an effect that cannot start and keeps sending the camera", async () => {
    const { camera } = joinWithFakes();
    vi.mocked(startEffect).mockRejectedValue(new Error("WebGL is unavailable"));
    await useStudio.getState().setBackground({ kind: "blur" });
    expect(useStudio.getState().error).toBe("The background effect could not start: WebGL is unavailable");
    expect(senders.video.track).toBe(camera);
    expect(useStudio.getState().background).toEqual({ kind: "none" });
    expect(useStudio.getState().backgroundStarting).toBe(false);
  });

  it("is stopped when the studio is left", async () => {
    joinWithFakes();
    const effect = fakeEffect();
    vi.mocked(startEffect).mockResolvedValue(effect as never);
    await useStudio.getState().setBackground({ kind: "blur" });
    useStudio.getState().leave();
    expect(effect.stop).toHaveBeenCalled();
    expect(useStudio.getState().background).toEqual({ kind: "none" });
  });
});
