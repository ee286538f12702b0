// Who is signed in: the access token lives in memory, the refresh cookie survives reloads.
import { create } from "zustand";
import { api, setAccessToken, setRefresher, type AuthResponse, type UserView } from "../api/client";

interface AuthState {
  user: UserView | null;
  token: string | null;
  ready: boolean;
  init: () => Promise<void>;
  login: (email: string, password: string) => Promise<void>;
  register: (displayName: string, email: string, password: string) => Promise<void>;
  acceptInvite: (token: string, displayName: string) => Promise<void>;
  viewer: (broadcastId: string, displayName: string) => Promise<void>;
  logout: () => Promise<void>;
}

export const useAuth = create<AuthState>((set, get) => {
  const signedIn = (r: AuthResponse) => {
    setAccessToken(r.accessToken);
    set({ user: r.user, token: r.accessToken, ready: true });
  };
  const refresh = async () => {
    try {
      // 204 (undefined): no session, the visitor is signed out.
      const r = await api<AuthResponse | undefined>("POST", "/api/auth/refresh", undefined, false);
      if (!r) throw new Error("signed out");
      signedIn(r);
      return r.accessToken;
    } catch {
      setAccessToken(null);
      set({ user: null, token: null, ready: true });
      return null;
    }
  };
  setRefresher(refresh);
  return {
    user: null,
    token: null,
    ready: false,
    init: async () => {
      if (!get().ready) await refresh();
    },
    login: async (email, password) =>
      signedIn(await api<AuthResponse>("POST", "/api/auth/login", { email, password })),
    register: async (displayName, email, password) =>
      signedIn(await api<AuthResponse>("POST", "/api/auth/register", { displayName, email, password })),
    acceptInvite: async (token, displayName) =>
      signedIn(await api<AuthResponse>("POST", "/api/auth/invite/accept", { token, displayName })),
    viewer: async (broadcastId, displayName) =>
      signedIn(await api<AuthResponse>("POST", "/api/auth/viewer", { broadcastId, displayName })),
    logout: async () => {
      await api("POST", "/api/auth/logout").catch(() => undefined);
      setAccessToken(null);
      set({ user: null, token: null });
    },
  };
});
