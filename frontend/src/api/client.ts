// The API client: JSON in and out, the API's error shape turned into ApiError, one silent
// token refresh (the refresh cookie) when an access token expires.
import type { components } from "./schema";

export type Schemas = components["schemas"];
export type BroadcastView = Schemas["BroadcastView"];
export type StreamView = Schemas["StreamView"];
export type RecordingView = Schemas["RecordingView"];
export type UserView = Schemas["UserView"];
export type AuthResponse = Schemas["AuthResponse"];
export type DestinationView = Schemas["DestinationView"];
export type DestinationStatus = Schemas["DestinationStatus"];
export type CreateBroadcast = Schemas["CreateBroadcast"];
export type UpdateBroadcast = Schemas["UpdateBroadcast"];
export type NewDestination = Schemas["NewDestination"];
export type Layout = Schemas["Layout"];
export type Resolution = Schemas["Resolution"];
export type InviteView = Schemas["InviteView"];

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Turns any failed response into an ApiError with a message a person can read. */
export async function errorFrom(res: Response): Promise<ApiError> {
  let code = "http_" + res.status;
  let message = res.statusText || `request failed (${res.status})`;
  try {
    const body = (await res.json()) as Partial<Schemas["ErrorBody"]>;
    if (body.error?.message) {
      code = body.error.code ?? code;
      message = body.error.message;
    }
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(res.status, code, message);
}

let accessToken: string | null = null;
let onRefresh: (() => Promise<string | null>) | null = null;

export function setAccessToken(t: string | null) {
  accessToken = t;
}
export function getAccessToken() {
  return accessToken;
}
/** The auth store tells the client how to get a new access token. */
export function setRefresher(f: () => Promise<string | null>) {
  onRefresh = f;
}

export async function api<T>(method: string, path: string, body?: unknown, retry = true): Promise<T> {
  const headers: Record<string, string> = {};
  // A form (a file upload) goes as multipart, its boundary set by the browser.
  const form = body instanceof FormData;
  if (body !== undefined && !form) headers["Content-Type"] = "application/json";
  if (accessToken) headers["Authorization"] = `Bearer ${accessToken}`;
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : form ? body : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server. Check your connection and try again.");
  }
  if (res.status === 401 && retry && accessToken && onRefresh) {
    if (await onRefresh()) return api<T>(method, path, body, false);
  }
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const wsUrl = (path: string) =>
  `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
