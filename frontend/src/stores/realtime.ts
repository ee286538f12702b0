// The realtime socket (/api/ws): chat history and messages, viewer counts and broadcast
// events for one broadcast's channel, reconnecting with backoff after a network drop.
import { create } from "zustand";
import { wsUrl } from "../api/client";

export type Channel = "studio" | "public";

export interface ChatMessage {
  id: string;
  broadcastId: string;
  channel: Channel;
  userId: string;
  displayName: string;
  text: string;
  createdAt: string;
}

export interface BroadcastEvent {
  kind: "started" | "ended" | "updated" | "destination";
  name?: string;
  state?: string;
  lastError?: string;
}

export type Connection = "connecting" | "open" | "reconnecting" | "closed";

interface RealtimeState {
  connection: Connection;
  messages: ChatMessage[];
  viewers: number;
  lastEvent: BroadcastEvent | null;
  error: string | null;
  open: (broadcastId: string, channel: Channel, token: string | null) => void;
  close: () => void;
  send: (text: string) => boolean;
}

const MAX_MESSAGES = 200;

/** Folds one server message into the state; pure, so it is tested on its own. */
export function reduce(
  s: Pick<RealtimeState, "messages" | "viewers" | "lastEvent" | "error">,
  m: Record<string, unknown>,
  broadcastId: string,
  channel: Channel,
): Partial<RealtimeState> {
  switch (m.type) {
    case "joined":
      return {
        messages: (m.history as ChatMessage[]) ?? [],
        viewers: Number(m.viewers ?? 0),
        error: null,
      };
    case "chat": {
      const msg = m.message as ChatMessage;
      if (!msg || msg.broadcastId !== broadcastId || msg.channel !== channel) return {};
      if (s.messages.some((x) => x.id === msg.id)) return {};
      return { messages: [...s.messages, msg].slice(-MAX_MESSAGES) };
    }
    case "viewers":
      return m.broadcastId === broadcastId ? { viewers: Number(m.count ?? 0) } : {};
    case "broadcast":
      return m.broadcastId === broadcastId ? { lastEvent: m.event as BroadcastEvent } : {};
    case "error":
      return { error: String(m.message ?? "the chat refused that") };
    default:
      return {};
  }
}

/** One socket per channel: the studio shows its private chat and the audience's side by side. */
export const createRealtime = () => create<RealtimeState>((set, get) => {
  let ws: WebSocket | null = null;
  let target: { broadcastId: string; channel: Channel; token: string | null } | null = null;
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let ping: ReturnType<typeof setInterval> | undefined;

  const connect = () => {
    if (!target) return;
    const { broadcastId, channel, token } = target;
    const q = token ? `?token=${encodeURIComponent(token)}` : "";
    const sock = new WebSocket(wsUrl(`/api/ws${q}`));
    ws = sock;
    sock.onopen = () => {
      attempt = 0;
      set({ connection: "open" });
      sock.send(JSON.stringify({ type: "join", broadcastId, channel }));
      clearInterval(ping);
      ping = setInterval(() => sock.readyState === WebSocket.OPEN && sock.send('{"type":"ping"}'), 20_000);
    };
    sock.onmessage = (ev) => {
      try {
        const m = JSON.parse(ev.data);
        set(reduce(get(), m, broadcastId, channel));
      } catch {
        // a frame we cannot read is skipped
      }
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      clearInterval(ping);
      if (!target) return set({ connection: "closed" });
      // Backoff up to 10 s; history comes again on the next join, so nothing is lost.
      set({ connection: "reconnecting" });
      const delay = Math.min(10_000, 500 * 2 ** attempt++);
      timer = setTimeout(connect, delay);
    };
  };

  return {
    connection: "closed",
    messages: [],
    viewers: 0,
    lastEvent: null,
    error: null,
    open: (broadcastId, channel, token) => {
      get().close();
      target = { broadcastId, channel, token };
      set({ connection: "connecting", messages: [], viewers: 0, lastEvent: null, error: null });
      connect();
    },
    close: () => {
      target = null;
      clearTimeout(timer);
      clearInterval(ping);
      const sock = ws;
      ws = null;
      sock?.close();
      set({ connection: "closed" });
    },
    send: (text) => {
      if (!ws || ws.readyState !== WebSocket.OPEN || !target) return false;
      ws.send(JSON.stringify({ type: "chat", broadcastId: target.broadcastId, channel: target.channel, text }));
      return true;
    },
  };
});

export type RealtimeStore = ReturnType<typeof createRealtime>;
/** The studio's private chat, or the watch page's live chat. */
export const useRealtime = createRealtime();
/** The audience's live chat, as the studio sees it. */
export const useAudienceChat = createRealtime();
