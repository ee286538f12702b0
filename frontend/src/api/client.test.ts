import { describe, expect, it, vi, afterEach } from "vitest";
import { api, ApiError, errorFrom, formatBytes, formatDuration, setAccessToken } from "./client";

afterEach(() => {
  vi.unstubAllGlobals();
  setAccessToken(null);
});

describe("errors", () => {
  it("reads the API's error shape", async () => {
    const e = await errorFrom(new Response(JSON.stringify({ error: { code: "conflict", message: "the broadcast has ended" } }), { status: 409 }));
    expect(e).toBeInstanceOf(ApiError);
    expect([e.status, e.code, e.message]).toEqual([409, "conflict", "the broadcast has ended"]);
  });
  it("falls back to the status when the body is not JSON", async () => {
    const e = await errorFrom(new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }));
    expect([e.status, e.message]).toEqual([502, "Bad Gateway"]);
  });
  it("says the server is unreachable on a network failure", async () => {
    vi.stubGlobal("fetch", vi.fn().mockRejectedValue(new TypeError("Failed to fetch")));
    await expect(api("GET", "/api/streams")).rejects.toMatchObject({ code: "network" });
  });
});

describe("requests", () => {
  it("sends the bearer token and JSON, and parses the reply", async () => {
    const fetch = vi.fn().mockResolvedValue(new Response('{"id":"x"}', { status: 201 }));
    vi.stubGlobal("fetch", fetch);
    setAccessToken("t0k");
    expect(await api("POST", "/api/broadcasts", { title: "A" })).toEqual({ id: "x" });
    const [, init] = fetch.mock.calls[0];
    expect(init.headers).toMatchObject({ Authorization: "Bearer t0k", "Content-Type": "application/json" });
    expect(init.body).toBe('{"title":"A"}');
  });
  it("returns nothing for 204", async () => {
    vi.stubGlobal("fetch", vi.fn().mockResolvedValue(new Response(null, { status: 204 })));
    expect(await api("DELETE", "/api/recordings/x")).toBeUndefined();
  });
});

describe("formatting", () => {
  it("durations and sizes", () => {
    expect(formatDuration(65_000)).toBe("1:05");
    expect(formatDuration(3_725_000)).toBe("1:02:05");
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(5 * 1024 * 1024)).toBe("5.0 MB");
  });
});
