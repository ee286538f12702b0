// The public watch page: the player, title, viewers, live chat, and an ended state.
import { useEffect, useState, type FormEvent } from "react";
import { useParams } from "react-router-dom";
import { api, type StreamView } from "../api/client";
import { useAuth } from "../stores/auth";
import { useRealtime } from "../stores/realtime";
import { HlsPlayer } from "../components/HlsPlayer";
import { FlvPlayer } from "../components/FlvPlayer";
import { Chat } from "../components/Chat";
import { ErrorBanner, Page } from "../components/ui";

export function Watch() {
  const { id = "" } = useParams();
  const { token, user, viewer } = useAuth();
  const { open, close, viewers, lastEvent } = useRealtime();
  const [s, setS] = useState<StreamView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [name, setName] = useState("");
  useEffect(() => {
    let live = true;
    const load = () =>
      api<StreamView>("GET", `/api/streams/${id}`).then(
        (x) => live && (setS(x), setError(null)),
        (e) => live && setError(e.message),
      );
    void load();
    const t = setInterval(load, 5000);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [id, lastEvent]);
  // A viewer identity for this broadcast (or the signed-in host) may chat; anyone may read.
  const canSend = !!user && (user.role === "host" || user.broadcastId === id);
  useEffect(() => {
    open(id, "public", canSend ? token : null);
    return () => close();
  }, [id, canSend, token]);
  const identify = async (e: FormEvent) => {
    e.preventDefault();
    try {
      await viewer(id, name);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const ended = s?.state === "Ended";
  return (
    <Page title={s?.title ?? "Watch"}>
      <ErrorBanner error={error} />
      <div className="grid gap-4 lg:grid-cols-[1fr_20rem]">
        <div>
          {ended ? (
            <div data-testid="ended" className="flex aspect-video items-center justify-center rounded-lg bg-zinc-900 text-lg">This stream has ended.</div>
          ) : s?.flvUrl ? (
            <FlvPlayer src={s.flvUrl} hls={s.hlsUrl} poster={s.thumbnailUrl} />
          ) : s?.hlsUrl ? (
            <HlsPlayer src={s.hlsUrl} lowLatency={s.lowLatency} poster={s.thumbnailUrl} />
          ) : (
            <div className="flex aspect-video items-center justify-center rounded-lg bg-zinc-900 text-zinc-400">
              {s?.state === "Live" ? "The stream is starting…" : "The stream has not started yet."}
            </div>
          )}
          {s && (
            <div className="mt-3">
              <p className="text-sm text-zinc-400">
                {s.hostName} · <span data-testid="viewers">{viewers || s.viewers} watching</span>
                {s.state === "Live" && <span className="ml-2 rounded bg-red-600 px-1.5 text-xs font-bold text-white">LIVE</span>}
              </p>
              {s.description && <p className="mt-2 whitespace-pre-wrap">{s.description}</p>}
            </div>
          )}
        </div>
        <Chat
          title="Live chat"
          canSend={canSend}
          signInHint={
            <form onSubmit={identify} className="mt-2 flex gap-2">
              <label className="sr-only" htmlFor="viewer-name">Your name</label>
              <input id="viewer-name" className="input" required maxLength={60} placeholder="Your name, to chat" value={name} onChange={(e) => setName(e.target.value)} />
              <button className="btn">Chat</button>
            </form>
          }
        />
      </div>
    </Page>
  );
}
