// The studio once joined, for a host and for guests: the stage, backstage, own media
// controls, participants' network quality, and the private studio chat.
import { useEffect } from "react";
import { useStudio, type Participant, type ParticipantStats } from "../stores/studio";
import { useAudienceChat, useRealtime } from "../stores/realtime";
import { BackgroundPicker } from "./BackgroundPicker";
import { Chat } from "./Chat";
import { ErrorBanner, TrackAudio, TrackVideo } from "./ui";

function quality(s: ParticipantStats | undefined): { label: string; cls: string } {
  if (!s) return { label: "unknown", cls: "text-zinc-500" };
  if (s.packetLoss > 0.05 || (s.rttMs ?? 0) > 400) return { label: "poor", cls: "text-red-400" };
  if (s.packetLoss > 0.01 || (s.rttMs ?? 0) > 150) return { label: "fair", cls: "text-amber-400" };
  return { label: "good", cls: "text-emerald-400" };
}

function Tile({ p, speaking }: { p: Participant; speaking: boolean }) {
  const { tiles, me, cameraOff, preview: local, view } = useStudio();
  const mine = p.id === me;
  const t = tiles[p.id] ?? {};
  const off = mine ? cameraOff : p.muted.includes("camera") || !t.camera;
  return (
    <figure data-testid={`tile-${p.name}`} className={`relative aspect-video overflow-hidden rounded-lg bg-zinc-800 ${speaking ? "ring-2 ring-sky-400" : ""}`}>
      {mine && local && !off ? (
        <TrackVideo stream={local} muted label={`${p.name} (you)`} className="h-full w-full object-cover" />
      ) : !off && t.camera ? (
        <TrackVideo track={t.camera} muted label={p.name} className="h-full w-full object-cover" onSize={(w, h) => view(t.camera!, w, h)} />
      ) : (
        <div className="flex h-full items-center justify-center text-3xl font-bold text-zinc-400" aria-label={`${p.name}, camera off`}>
          {p.name.split(/\s+/).map((w) => w[0]).join("").slice(0, 2).toUpperCase()}
        </div>
      )}
      {!mine && t.microphone && <TrackAudio track={t.microphone} />}
      <figcaption className="absolute bottom-1 left-1 rounded bg-black/70 px-1.5 text-xs">
        {p.name}
        {mine && " (you)"}
        {p.muted.includes("microphone") && " · muted"}
      </figcaption>
      {t.screen && (
        <TrackVideo track={t.screen} muted label={`${p.name}'s screen`} onSize={(w, h) => view(t.screen!, w, h)} className="absolute right-1 top-1 w-1/3 rounded border border-zinc-600" />
      )}
    </figure>
  );
}

export function StudioRoom({ host }: { host: boolean }) {
  const s = useStudio();
  useEffect(
    () => () => {
      useRealtime.getState().close();
      useAudienceChat.getState().close();
    },
    [],
  );
  const people = Object.values(s.participants);
  const onStage = people.filter((p) => p.onStage);
  const backstage = people.filter((p) => !p.onStage);
  const stats = Object.fromEntries(s.stats.map((x) => [x.participant, x]));
  return (
    <div className="grid gap-4 xl:grid-cols-[1fr_20rem]">
      <div className="space-y-4">
        <ErrorBanner error={s.error} />
        {s.status === "reconnecting" && <p role="status" className="text-amber-300">Connection lost; reconnecting…</p>}
        <section aria-label="Stage">
          <h2 className="mb-2 text-sm font-semibold text-zinc-300">On stage ({onStage.length})</h2>
          <div className="grid gap-2 sm:grid-cols-2 lg:grid-cols-3">
            {onStage.map((p) => <Tile key={p.id} p={p} speaking={s.activeSpeaker === p.id} />)}
            {onStage.length === 0 && <p className="text-sm text-zinc-500">Nobody is on stage.</p>}
          </div>
        </section>
        {backstage.length > 0 && (
          // Backstage people are seen and heard in the studio, never in the show.
          <section aria-label="Backstage">
            <h2 className="mb-2 text-sm font-semibold text-zinc-300">Backstage ({backstage.length})</h2>
            <div className="grid grid-cols-2 gap-2 sm:grid-cols-3 lg:grid-cols-5">
              {backstage.map((p) => <Tile key={p.id} p={p} speaking={s.activeSpeaker === p.id} />)}
            </div>
          </section>
        )}
        <div className="flex flex-wrap items-center gap-2" role="toolbar" aria-label="Your media">
          {/* What the others receive, effect included; on stage one also sees it as a tile. */}
          <TrackVideo stream={s.cameraOff ? null : s.preview} muted label="Your camera as sent" className="h-16 w-28 rounded bg-black object-cover" />
          <button className="btn" aria-pressed={s.micMuted} onClick={() => s.setMic(!s.micMuted)}>{s.micMuted ? "Unmute" : "Mute"}</button>
          <button className="btn" aria-pressed={s.cameraOff} onClick={() => s.setCamera(!s.cameraOff)}>{s.cameraOff ? "Camera on" : "Camera off"}</button>
          {s.sharing ? (
            <button className="btn" onClick={s.stopShare}>Stop sharing</button>
          ) : (
            <button className="btn" onClick={() => void s.shareScreen()}>Share screen</button>
          )}
          <BackgroundPicker />
          <button className="btn-danger" onClick={s.leave}>Leave studio</button>
        </div>
        <section aria-label="People" className="card">
          <h2 className="mb-2 text-sm font-semibold">People</h2>
          <ul className="divide-y divide-zinc-800 text-sm">
            {[...onStage, ...backstage].map((p) => {
              const q = quality(stats[p.id]);
              return (
                <li key={p.id} className="flex flex-wrap items-center gap-2 py-2" data-testid={`person-${p.name}`}>
                  <span className="font-medium">{p.name}</span>
                  <span className="text-xs text-zinc-400">{p.role} · {p.onStage ? "on stage" : "backstage"}</span>
                  {host && <span className={`text-xs ${q.cls}`}>network {q.label}</span>}
                  {host && (
                    <button className="btn ml-auto" onClick={() => s.stage(p.id, !p.onStage)}>
                      {p.onStage ? `Remove ${p.name} from stage` : `Add ${p.name} to stage`}
                    </button>
                  )}
                </li>
              );
            })}
          </ul>
        </section>
      </div>
      <div className="grid gap-4">
        <Chat title="Studio chat" canSend />
        {host && <Chat title="Audience chat" canSend store={useAudienceChat} />}
      </div>
    </div>
  );
}
