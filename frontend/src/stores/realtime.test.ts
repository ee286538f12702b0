import { describe, expect, it } from "vitest";
import { reduce, type ChatMessage } from "./realtime";

const msg = (id: string, broadcastId = "b", channel: "public" | "studio" = "public"): ChatMessage => ({
  id,
  broadcastId,
  channel,
  userId: "u",
  displayName: "Ann",
  text: "hi " + id,
  createdAt: "2026-01-01T00:00:00Z",
});
const empty = { messages: [] as ChatMessage[], viewers: 0, lastEvent: null, error: null };

describe("the realtime reducer", () => {
  it("takes history and viewers from joined", () => {
    expect(reduce(empty, { type: "joined", history: [msg("1")], viewers: 3 }, "b", "public")).toMatchObject({
      messages: [msg("1")],
      viewers: 3,
    });
  });
  it("appends chat for this broadcast and channel only, once", () => {
    const s = { ...empty, messages: [msg("1")] };
    expect(reduce(s, { type: "chat", broadcastId: "b", message: msg("2") }, "b", "public").messages).toHaveLength(2);
    expect(reduce(s, { type: "chat", broadcastId: "b", message: msg("1") }, "b", "public")).toEqual({});
    expect(reduce(s, { type: "chat", broadcastId: "c", message: msg("3", "c") }, "b", "public")).toEqual({});
    expect(reduce(s, { type: "chat", broadcastId: "b", message: msg("4", "b", "studio") }, "b", "public")).toEqual({});
  });
  it("keeps the last 200 messages", () => {
    const s = { ...empty, messages: Array.from({ length: 200 }, (_, i) => msg(String(i))) };
    const out = reduce(s, { type: "chat", broadcastId: "b", message: msg("new") }, "b", "public").messages!;
    expect(out).toHaveLength(200);
    expect(out[199].id).toBe("new");
    expect(out[0].id).toBe("1");
  });
  it("tracks viewers and broadcast events of this broadcast, and errors", () => {
    expect(reduce(empty, { type: "viewers", broadcastId: "b", count: 7 }, "b", "public")).toEqual({ viewers: 7 });
    expect(reduce(empty, { type: "viewers", broadcastId: "x", count: 7 }, "b", "public")).toEqual({});
    expect(reduce(empty, { type: "broadcast", broadcastId: "b", event: { kind: "ended" } }, "b", "public")).toEqual({ lastEvent: { kind: "ended" } });
    expect(reduce(empty, { type: "error", code: "rate_limited", message: "slow down" }, "b", "public")).toEqual({ error: "slow down" });
    expect(reduce(empty, { type: "pong" }, "b", "public")).toEqual({});
  });
});
