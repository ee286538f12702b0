// One person's place in a studio: the signalling socket to the SFU (through the API), the
// peer connection, who is here and on stage, and the media each of them sends us.
import { create } from "zustand";
import { wsUrl, type Schemas } from "../api/client";
import { startEffect, type Background, type Effect } from "../media/background";

// The signalling messages both ways, generated from castyard-proto through the OpenAPI
// document (schema.d.ts): a change to the wire in Rust fails this file's type check.
export type ServerMessage = Schemas["ServerMessage"];
export type ClientMessage = Schemas["ClientMessage"];
export type Source = Schemas["Source"];
export type Participant = Schemas["ParticipantInfo"];
export type TrackInfo = Schemas["TrackInfo"];
export type ParticipantStats = Schemas["ParticipantStats"];

/**
 * The camera's simulcast layers, named and sized as the SFU's ladder expects (media-worker
 * sfu/layers.rs): each subscriber gets the smallest that covers its tile and fits its bandwidth.
 */
export const CAMERA_LAYERS: RTCRtpEncodingParameters[] = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", maxBitrate: 1_500_000 },
];

/** The SFU's goodbye to a connection the same person replaced (media-worker sfu/room.rs). */
const FINAL_BYE = "replaced by a newer connection";
/** Reconnects that never get in (0.5 s doubling to 10 s: about 35 s) before giving up. */
const GIVE_UP_AFTER = 7;

/** Remote media by participant, then source. */
export type Tiles = Record<string, Partial<Record<Source, MediaStreamTrack>>>;

interface StudioState {
  status: "idle" | "joining" | "joined" | "reconnecting" | "left";
  /** The camera and microphone the studio joined with: the studio owns them and stops them on leave. */
  media: MediaStream | null;
  /** What one's own tile shows: the joined media, or its camera with the background effect. */
  preview: MediaStream | null;
  /** The background effect on one's own camera, and whether it is still starting. */
  background: Background;
  backgroundStarting: boolean;
  me: string | null;
  participants: Record<string, Participant>;
  tiles: Tiles;
  activeSpeaker: string | null;
  stats: ParticipantStats[];
  error: string | null;
  micMuted: boolean;
  cameraOff: boolean;
  sharing: boolean;
  join: (broadcastId: string, token: string, media: MediaStream) => void;
  leave: () => void;
  setMic: (muted: boolean) => void;
  setCamera: (off: boolean) => void;
  shareScreen: () => Promise<void>;
  stopShare: () => void;
  setBackground: (bg: Background) => Promise<void>;
  /** Tells the SFU the size a received video is shown at (0x0 when hidden). */
  view: (track: MediaStreamTrack, width: number, height: number) => void;
  stage: (participant: string, onStage: boolean) => void;
}

/** Which remote tracks are still offered; tiles of tracks that went away are dropped. Pure. */
export function pruneTiles(tiles: Tiles, tracks: TrackInfo[]): Tiles {
  const live = new Set(tracks.map((t) => `${t.participant}/${t.source}`));
  const out: Tiles = {};
  for (const [p, sources] of Object.entries(tiles)) {
    const kept = Object.fromEntries(
      Object.entries(sources).filter(([s]) => live.has(`${p}/${s}`)),
    ) as Tiles[string];
    if (Object.keys(kept).length > 0) out[p] = kept;
  }
  return out;
}

export const useStudio = create<StudioState>((set, get) => {
  let ws: WebSocket | null = null;
  let pc: RTCPeerConnection | null = null;
  let session: { broadcastId: string; token: string; media: MediaStream } | null = null;
  let tracks: Record<string, TrackInfo> = {};
  const sources: Record<string, Source> = {};
  const sourceOf = new WeakMap<MediaStreamTrack, Source>();
  const midOf = new WeakMap<MediaStreamTrack, string>();
  const viewed = new Map<string, string>();
  let screen: RTCRtpTransceiver | null = null;
  let camera: RTCRtpTransceiver | null = null;
  let effect: Effect | null = null;
  let queue = Promise.resolve();
  let attempt = 0;
  let ping: ReturnType<typeof setInterval> | undefined;
  let saidBye = false;

  const send = (m: ClientMessage) => ws?.readyState === WebSocket.OPEN && ws.send(JSON.stringify(m));

  const learn = (list: TrackInfo[]) => {
    tracks = Object.fromEntries(list.map((t) => [t.mid, t]));
    set({ tiles: pruneTiles(get().tiles, list) });
  };

  const offer = async () => {
    if (!pc) return;
    const o = await pc.createOffer();
    await pc.setLocalDescription(o);
    for (const t of pc.getTransceivers()) {
      const track = t.sender.track;
      if (track && t.mid !== null && !sources[t.mid]) sources[t.mid] = sourceOf.get(track) ?? "camera";
    }
    send({ type: "offer", sdp: o.sdp ?? "", sources });
  };

  const handle = async (m: ServerMessage) => {
    switch (m.type) {
      case "joined": {
        const participants = Object.fromEntries(m.participants.map((p) => [p.id, p]));
        set({ status: "joined", me: m.participant, participants, activeSpeaker: m.activeSpeaker ?? null, error: null });
        attempt = 0;
        break;
      }
      case "participant":
        set({ participants: { ...get().participants, [m.id]: m } });
        break;
      case "participantLeft": {
        const participants = { ...get().participants };
        delete participants[m.participant];
        const tiles = { ...get().tiles };
        delete tiles[m.participant];
        set({ participants, tiles });
        break;
      }
      case "answer":
        learn(m.tracks);
        await pc?.setRemoteDescription({ type: "answer", sdp: m.sdp });
        break;
      case "offer": {
        // The SFU redoes its offer after answering ours, so ours wins a collision.
        if (!pc || pc.signalingState !== "stable") return;
        learn(m.tracks);
        await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
        const a = await pc.createAnswer();
        await pc.setLocalDescription(a);
        send({ type: "answer", sdp: a.sdp ?? "" });
        break;
      }
      case "activeSpeaker":
        set({ activeSpeaker: m.participant ?? null });
        break;
      case "stats":
        set({ stats: m.participants });
        break;
      case "error":
        set({ error: m.message });
        break;
      case "bye":
        // Joined again from elsewhere: coming back would push that connection out, and so on.
        // Other goodbyes (a lost media path, a studio restarting) are worth a reconnect.
        if (m.reason === FINAL_BYE) saidBye = true;
        set({ error: `The studio ended this connection: ${m.reason}` });
        break;
    }
  };

  const connect = () => {
    if (!session) return;
    const { broadcastId, token, media } = session;
    pc?.close();
    tracks = {};
    for (const k of Object.keys(sources)) delete sources[k];
    screen = null;
    camera = null;
    viewed.clear();
    saidBye = false;
    const peer = new RTCPeerConnection();
    pc = peer;
    (window as unknown as { castyardPc?: RTCPeerConnection }).castyardPc = peer;
    peer.ontrack = (e) => {
      const info = tracks[e.transceiver.mid ?? ""];
      if (!info) return;
      if (e.transceiver.mid) midOf.set(e.track, e.transceiver.mid);
      // Not shown until a tile says otherwise (backstage people have none): the smallest layer.
      if (e.track.kind === "video") get().view(e.track, 0, 0);
      const tiles = { ...get().tiles };
      tiles[info.participant] = { ...tiles[info.participant], [info.source]: e.track };
      set({ tiles });
    };
    for (const track of media.getTracks()) {
      const video = track.kind === "video";
      const sent = video && effect ? effect.track : track;
      sourceOf.set(sent, video ? "camera" : "microphone");
      const t = peer.addTransceiver(sent, video ? { direction: "sendonly", sendEncodings: CAMERA_LAYERS } : { direction: "sendonly" });
      if (video) camera = t;
    }
    const sock = new WebSocket(wsUrl(`/api/broadcasts/${broadcastId}/studio?token=${encodeURIComponent(token)}`));
    ws = sock;
    sock.onopen = () => {
      queue = queue.then(offer).catch((e) => set({ error: String(e) }));
      clearInterval(ping);
      ping = setInterval(() => send({ type: "ping" }), 20_000);
    };
    // One message at a time: an offer is never looked at while the answer before it applies.
    sock.onmessage = (ev) => {
      queue = queue.then(() => handle(JSON.parse(ev.data) as ServerMessage)).catch((e) => set({ error: String(e) }));
    };
    sock.onclose = (ev) => {
      if (ws !== sock || !session) return;
      clearInterval(ping);
      if (ev.code === 4001 || ev.code === 1008 || saidBye || attempt >= GIVE_UP_AFTER) {
        const error = saidBye
          ? get().error
          : attempt >= GIVE_UP_AFTER
            ? "The studio cannot be reached (it may have ended). Join again to retry."
            : ev.reason || "The studio refused this connection.";
        get().leave();
        set({ error });
        return;
      }
      // A dropped network: rejoin with the same media after a backoff.
      set({ status: "reconnecting", tiles: {} });
      setTimeout(connect, Math.min(10_000, 500 * 2 ** attempt++));
    };
  };

  return {
    status: "idle",
    media: null,
    preview: null,
    background: { kind: "none" },
    backgroundStarting: false,
    me: null,
    participants: {},
    tiles: {},
    activeSpeaker: null,
    stats: [],
    error: null,
    micMuted: false,
    cameraOff: false,
    sharing: false,
    join: (broadcastId, token, media) => {
      // Rejoining with the same camera must not stop it on the way.
      if (session?.media === media) set({ media: null });
      get().leave();
      session = { broadcastId, token, media };
      attempt = 0;
      set({ status: "joining", media, preview: media, error: null, tiles: {}, participants: {} });
      connect();
    },
    leave: () => {
      if (!session) return;
      send({ type: "leave" });
      session = null;
      clearInterval(ping);
      ws?.close();
      ws = null;
      pc?.close();
      pc = null;
      // Leaving turns the camera light off: nobody else holds these tracks.
      effect?.stop();
      effect = null;
      camera = null;
      get().media?.getTracks().forEach((t) => t.stop());
      set({ status: "left", media: null, preview: null, background: { kind: "none" }, tiles: {}, participants: {}, me: null, sharing: false });
    },
    setMic: (muted) => {
      session?.media.getAudioTracks().forEach((t) => (t.enabled = !muted));
      send({ type: "mute", source: "microphone", muted });
      set({ micMuted: muted });
    },
    setCamera: (off) => {
      session?.media.getVideoTracks().forEach((t) => (t.enabled = !off));
      if (effect) effect.track.enabled = !off;
      send({ type: "mute", source: "camera", muted: off });
      set({ cameraOff: off });
    },
    shareScreen: async () => {
      if (!pc) return;
      let stream: MediaStream;
      try {
        stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      } catch (e) {
        set({ error: `Screen share was not started: ${(e as Error).message}` });
        return;
      }
      const track = stream.getVideoTracks()[0];
      sourceOf.set(track, "screen");
      track.onended = () => get().stopShare();
      screen = pc.addTransceiver(track, { direction: "sendonly" });
      set({ sharing: true });
      queue = queue.then(offer);
    },
    stopShare: () => {
      if (screen && pc) {
        screen.sender.track?.stop();
        screen.sender.replaceTrack(null);
        screen.direction = "inactive";
        screen = null;
        queue = queue.then(offer);
      }
      set({ sharing: false });
    },
    setBackground: async (bg) => {
      const joined = session;
      const raw = joined?.media.getVideoTracks()[0];
      if (!joined || !raw) return;
      if (bg.kind === "none") {
        const old = effect;
        effect = null;
        await camera?.sender.replaceTrack(raw);
        old?.stop();
        set({ background: bg, preview: joined.media });
        return;
      }
      if (effect) {
        try {
          await effect.set(bg);
          set({ background: bg });
        } catch (e) {
          set({ error: `The background was not changed: ${(e as Error).message}` });
        }
        return;
      }
      set({ backgroundStarting: true });
      try {
        const started = await startEffect(raw, bg);
        if (session !== joined) return started.stop();
        effect = started;
        started.track.enabled = !get().cameraOff;
        sourceOf.set(started.track, "camera");
        // Same sender, same simulcast layers: the SFU and everyone else see no renegotiation.
        await camera?.sender.replaceTrack(started.track);
        set({ background: bg, preview: new MediaStream([started.track, ...joined.media.getAudioTracks()]) });
      } catch (e) {
        set({ error: `The background effect could not start: ${(e as Error).message}` });
      } finally {
        set({ backgroundStarting: false });
      }
    },
    view: (track, width, height) => {
      const mid = midOf.get(track);
      const size = `${Math.round(width)}x${Math.round(height)}`;
      if (!mid || viewed.get(mid) === size) return;
      viewed.set(mid, size);
      send({ type: "view", mid, width: Math.round(width), height: Math.round(height) });
    },
    stage: (participant, onStage) => send({ type: "stage", participant, onStage }),
  };
});
