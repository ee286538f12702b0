// The host's studio: devices, then the room; the show's controls (go live, end, record,
// layout, scene), destination health, the invite link and a preview of the composed show.
import { useEffect, useRef, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { api, type BroadcastView, type InviteView, type StreamView } from "../api/client";
import { useAuth } from "../stores/auth";
import { useAudienceChat, useRealtime } from "../stores/realtime";
import { useStudio } from "../stores/studio";
import { DevicePreview } from "../components/DevicePreview";
import { StudioRoom } from "../components/StudioRoom";
import { HlsPlayer } from "../components/HlsPlayer";
import { SceneControls } from "../components/SceneControls";
import { ErrorBanner, Page } from "../components/ui";

const STATE_CLS: Record<string, string> = {
  Live: "text-emerald-400",
  Retrying: "text-amber-400",
  Connecting: "text-sky-300",
  Failed: "text-red-400",
  Idle: "text-zinc-400",
};

// What the host can do about each reason a show reports (the message says what happened).
const WHAT_TO_DO: Record<string, string> = {
  EncoderUnavailable: "Install FFmpeg on the server (make up installs it), then go live again.",
  DestinationsFailing: "Check the destination's URL and stream key; the others go on.",
  PortUnavailable: "Another program holds the port: stop it, or restart Castyard.",
  WaitingForAddress: "The cluster has not given the studio's media service an address yet.",
};

/** The reconciler's message when something is wrong, with what to do about it. */
function ShowProblem({ broadcast }: { broadcast: BroadcastView }) {
  if (!broadcast.message || broadcast.state === "Ended") return null;
  const failing = broadcast.conditions.find((c) => c.status === "False" && broadcast.message?.startsWith(`${c.reason}:`));
  const todo = (failing && WHAT_TO_DO[failing.reason]) ?? "The server's log has the details.";
  return (
    <div role="alert" data-testid="show-problem" className="mb-4 rounded-md border border-amber-700 bg-amber-950 px-4 py-2 text-sm text-amber-100">
      <p className="font-medium">{broadcast.message}</p>
      <p className="text-amber-300">{todo}</p>
    </div>
  );
}

export default function Studio() {
  const { id = "" } = useParams();
  const token = useAuth((s) => s.token);
  const studio = useStudio();
  const openChat = useRealtime((s) => s.open);
  const [b, setB] = useState<BroadcastView | null>(null);
  const [stream, setStream] = useState<StreamView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [invite, setInvite] = useState<InviteView | null>(null);
  const [busy, setBusy] = useState(false);
  const media = useRef<MediaStream | null>(null);
  const [haveMedia, setHaveMedia] = useState(false);

  useEffect(() => {
    let live = true;
    const poll = async () => {
      try {
        const x = await api<BroadcastView>("GET", `/api/broadcasts/${id}`);
        if (!live) return;
        setB(x);
        setStream(await api<StreamView>("GET", `/api/streams/${id}`));
      } catch (e) {
        if (live) setError((e as Error).message);
      }
    };
    void poll();
    const t = setInterval(poll, 2000);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [id]);
  useEffect(() => () => useStudio.getState().leave(), []);

  const act = async (f: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await f();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const enter = () => {
    if (!media.current || !token) return;
    studio.join(id, token, media.current);
    openChat(id, "studio", token);
    useAudienceChat.getState().open(id, "public", token);
  };
  if (!b) return <Page title="Studio"><ErrorBanner error={error} /></Page>;
  const joined = studio.status === "joined" || studio.status === "reconnecting";
  const live = b.state === "Live";
  return (
    <Page
      title={b.title}
      actions={
        <div className="flex flex-wrap items-center gap-2">
          <span data-testid="phase" className="text-sm text-zinc-400">{b.phase ?? b.state}</span>
          {b.state === "Backstage" && (
            <button className="btn-primary" disabled={busy} onClick={() => void act(async () => setB(await api("POST", `/api/broadcasts/${id}/start`)))}>Go live</button>
          )}
          {b.state !== "Ended" && (
            <button className="btn-danger" disabled={busy} onClick={() => void act(async () => setB(await api("POST", `/api/broadcasts/${id}/end`)))}>End broadcast</button>
          )}
          <label className="flex items-center gap-1 text-sm">
            <input type="checkbox" checked={b.recording} disabled={busy || b.state === "Ended"} onChange={(e) => void act(async () => setB(await api("PATCH", `/api/broadcasts/${id}`, { recording: e.target.checked })))} />
            Record
          </label>
          <Link className="btn" to={`/watch/${id}`} target="_blank">Watch page</Link>
        </div>
      }
    >
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <ShowProblem broadcast={b} />
      {b.state === "Ended" ? (
        <p>This broadcast has ended. Its recording is in the <Link className="text-sky-400" to="/library">library</Link>.</p>
      ) : !joined ? (
        <div className="card max-w-xl space-y-3">
          <h2 className="font-semibold">Check your camera and microphone</h2>
          <DevicePreview onReady={(s) => { media.current = s; setHaveMedia(!!s); }} />
          <button className="btn-primary" disabled={!haveMedia || studio.status === "joining"} onClick={enter}>Enter studio</button>
        </div>
      ) : (
        <div className="grid gap-4 2xl:grid-cols-[1fr_22rem]">
          <StudioRoom host />
          <aside className="space-y-4">
            <SceneControls
              broadcastId={id}
              layout={b.layout}
              running={!!b.endpoints?.control}
              setLayout={(l) => act(async () => setB(await api("PATCH", `/api/broadcasts/${id}`, { layout: l })))}
            />
            <section className="card space-y-2" aria-label="Show preview">
              <h2 className="text-sm font-semibold">The show</h2>
              {live && stream?.hlsUrl ? (
                <HlsPlayer src={stream.hlsUrl} />
              ) : (
                <p className="text-sm text-zinc-500">{live ? "Starting the show…" : "The composed show appears here once you are live."}</p>
              )}
            </section>
            <section className="card" aria-label="Destinations">
              <h2 className="mb-2 text-sm font-semibold">Destinations</h2>
              <ul className="space-y-1 text-sm">
                {b.destinations.map((d) => {
                  const st = b.destinationStatus.find((x) => x.name === d.name);
                  return (
                    <li key={d.id} data-testid={`destination-${d.name}`}>
                      <span className="font-medium">{d.name}</span>{" "}
                      <span className={STATE_CLS[st?.state ?? "Idle"]}>{st?.state ?? (live ? "Connecting" : "Idle")}</span>
                      {st && st.state === "Live" && <span className="text-zinc-400"> · {st.bitrateKbps} kbps</span>}
                      {st?.lastError && (
                        <p className="text-xs text-amber-300">
                          {st.errorKind && <span data-testid="error-kind" className="mr-1 rounded bg-amber-900 px-1">{st.errorKind}</span>}
                          {st.lastError} (retries: {st.retries})
                        </p>
                      )}
                    </li>
                  );
                })}
                {b.destinations.length === 0 && <li className="text-zinc-500">No destinations: <Link className="text-sky-400" to={`/broadcasts/${id}`}>add one</Link>.</li>}
              </ul>
            </section>
            <section className="card space-y-2" aria-label="Invite">
              <h2 className="text-sm font-semibold">Invite guests</h2>
              <button className="btn" onClick={() => void act(async () => setInvite(await api("POST", `/api/broadcasts/${id}/invites`)))}>Create invite link</button>
              {invite && (
                <div className="space-y-1">
                  <label className="label" htmlFor="invite">Invite link (valid until {new Date(invite.expiresAt).toLocaleString()})</label>
                  <input id="invite" data-testid="invite-url" readOnly className="input" value={invite.url} onFocus={(e) => e.target.select()} />
                  <button className="btn" onClick={() => void navigator.clipboard?.writeText(invite.url)}>Copy</button>
                </div>
              )}
            </section>
          </aside>
        </div>
      )}
    </Page>
  );
}
