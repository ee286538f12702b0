// Creating or editing a broadcast: its details, quality, recording, destinations (keys are
// sent once and only ever shown masked), and the RTMP ingest key for OBS.
import { useEffect, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, type BroadcastView, type Layout, type NewDestination, type Resolution, type Schemas, type UpdateBroadcast } from "../api/client";
import { ErrorBanner, Page } from "../components/ui";

const LAYOUTS: Layout[] = ["grid", "spotlight", "sidebar", "solo", "picture-in-picture"];
const KINDS: { kind: NewDestination["kind"]; label: string; url: string }[] = [
  { kind: "youtube", label: "YouTube", url: "rtmp://a.rtmp.youtube.com/live2" },
  { kind: "facebook", label: "Facebook", url: "rtmps://live-api-s.facebook.com:443/rtmp" },
  { kind: "twitch", label: "Twitch", url: "rtmp://live.twitch.tv/app" },
  { kind: "custom", label: "Custom RTMP", url: "" },
];

function toLocalInput(iso: string | null | undefined) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

export function BroadcastEdit() {
  const { id } = useParams();
  const nav = useNavigate();
  const [b, setB] = useState<BroadcastView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  const [form, setForm] = useState<UpdateBroadcast>({});
  const [dest, setDest] = useState<NewDestination>({ kind: "youtube", name: "YouTube", url: KINDS[0].url, streamKey: "" });
  const [ingest, setIngest] = useState<Schemas["IngestKeyView"] | null>(null);
  const [tests, setTests] = useState<Record<string, string>>({});

  const load = () =>
    api<BroadcastView>("GET", `/api/broadcasts/${id}`).then(
      (x) => {
        setB(x);
        setForm({
          title: x.title,
          description: x.description,
          scheduledStart: x.scheduledStart,
          output: x.output,
          recording: x.recording,
          layout: x.layout,
          hls: x.hls,
          ingest: x.ingest,
          maxGuests: x.maxGuests,
        });
      },
      (e) => setError(e.message),
    );
  useEffect(() => {
    void load();
  }, [id]);

  const run = async (f: () => Promise<unknown>) => {
    setError(null);
    setSaved(false);
    try {
      await f();
      return true;
    } catch (e) {
      setError((e as Error).message);
      return false;
    }
  };
  const save = (e: FormEvent) => {
    e.preventDefault();
    void run(async () => {
      setB(await api<BroadcastView>("PATCH", `/api/broadcasts/${id}`, form));
      setSaved(true);
    });
  };
  const addDestination = (e: FormEvent) => {
    e.preventDefault();
    void run(async () => {
      await api("POST", `/api/broadcasts/${id}/destinations`, dest);
      setDest({ ...dest, streamKey: "" });
      await load();
    });
  };
  if (!b) return <Page title="Broadcast"><ErrorBanner error={error} /></Page>;
  const out = form.output ?? b.output;
  const ended = b.state === "Ended";
  return (
    <Page
      title={b.title}
      actions={
        <div className="flex gap-2">
          {!ended && <Link className="btn-primary" to={`/studio/${b.id}`}>Open studio</Link>}
          <Link className="btn" to={`/watch/${b.id}`}>Watch page</Link>
          <button className="btn-danger" onClick={() => void run(async () => { await api("DELETE", `/api/broadcasts/${b.id}`); nav("/broadcasts"); })}>Delete</button>
        </div>
      }
    >
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <div className="grid gap-6 lg:grid-cols-2">
        <form onSubmit={save} className="card space-y-3" aria-label="Broadcast settings">
          <h2 className="font-semibold">Details</h2>
          <div>
            <label className="label" htmlFor="title">Title</label>
            <input id="title" className="input" required value={form.title ?? ""} onChange={(e) => setForm({ ...form, title: e.target.value })} />
          </div>
          <div>
            <label className="label" htmlFor="description">Description</label>
            <textarea id="description" className="input" rows={3} value={form.description ?? ""} onChange={(e) => setForm({ ...form, description: e.target.value })} />
          </div>
          <div>
            <label className="label" htmlFor="schedule">Scheduled start</label>
            <input id="schedule" type="datetime-local" className="input" value={toLocalInput(form.scheduledStart)} onChange={(e) => setForm({ ...form, scheduledStart: e.target.value ? new Date(e.target.value).toISOString() : null })} />
          </div>
          <div className="grid grid-cols-2 gap-3">
            <div>
              <label className="label" htmlFor="resolution">Output quality</label>
              <select id="resolution" className="input" value={out.resolution} onChange={(e) => setForm({ ...form, output: { ...out, resolution: e.target.value as Resolution } })}>
                <option value="720p">720p</option>
                <option value="1080p">1080p</option>
              </select>
            </div>
            <div>
              <label className="label" htmlFor="vbr">Video bitrate (kbps)</label>
              <input id="vbr" type="number" min={500} max={20000} className="input" value={out.videoBitrateKbps} onChange={(e) => setForm({ ...form, output: { ...out, videoBitrateKbps: Number(e.target.value) } })} />
            </div>
            <div>
              <label className="label" htmlFor="layout">Layout</label>
              <select id="layout" className="input" value={form.layout ?? b.layout} onChange={(e) => setForm({ ...form, layout: e.target.value as Layout })}>
                {LAYOUTS.map((l) => <option key={l} value={l}>{l}</option>)}
              </select>
            </div>
            <div>
              <label className="label" htmlFor="guests">Max guests</label>
              <input id="guests" type="number" min={0} max={10} className="input" value={form.maxGuests ?? b.maxGuests} onChange={(e) => setForm({ ...form, maxGuests: Number(e.target.value) })} />
            </div>
          </div>
          <label className="flex items-center gap-2 text-sm">
            <input type="checkbox" checked={!!form.recording} onChange={(e) => setForm({ ...form, recording: e.target.checked })} /> Record the show
          </label>
          <label className="flex items-center gap-2 text-sm">
            <input type="checkbox" checked={!!form.hls?.lowLatency} onChange={(e) => setForm({ ...form, hls: { enabled: true, lowLatency: e.target.checked } })} /> Low-latency watch page
          </label>
          <label className="flex items-center gap-2 text-sm">
            <input type="checkbox" checked={!!form.ingest?.rtmp} onChange={(e) => setForm({ ...form, ingest: { rtmp: e.target.checked } })} /> The show comes from OBS (RTMP ingest)
          </label>
          <div className="flex items-center gap-3">
            <button className="btn-primary" disabled={ended}>Save</button>
            {saved && <span role="status" className="text-sm text-emerald-400">Saved</span>}
          </div>
        </form>

        <div className="space-y-6">
          <section className="card space-y-3" aria-label="Destinations">
            <h2 className="font-semibold">Destinations</h2>
            <ul className="space-y-2">
              {b.destinations.map((d) => (
                <li key={d.id} className="flex flex-wrap items-center gap-2 text-sm">
                  <span className="font-medium">{d.name}</span>
                  <span className="text-zinc-400">{d.url}</span>
                  <code className="rounded bg-zinc-800 px-1" aria-label="Stream key (masked)">{d.streamKey}</code>
                  <span className="ml-auto flex gap-2">
                    <button className="btn" onClick={() => void run(async () => {
                      const r = await api<Schemas["DestinationTestResult"]>("POST", `/api/broadcasts/${b.id}/destinations/${d.id}/test`);
                      setTests({ ...tests, [d.id]: r.ok ? `reachable (${r.latencyMs} ms)` : `failed (${r.errorKind ?? "error"}): ${r.error}` });
                    })}>Test</button>
                    <button className="btn" aria-label={`Remove ${d.name}`} onClick={() => void run(async () => { await api("DELETE", `/api/broadcasts/${b.id}/destinations/${d.id}`); await load(); })}>Remove</button>
                  </span>
                  {tests[d.id] && <span role="status" className="w-full text-xs text-zinc-300">{tests[d.id]}</span>}
                </li>
              ))}
              {b.destinations.length === 0 && <li className="text-sm text-zinc-400">None yet: the show is only on the watch page.</li>}
            </ul>
            <form onSubmit={addDestination} className="grid gap-2 sm:grid-cols-2" aria-label="Add a destination">
              <div>
                <label className="label" htmlFor="dkind">Platform</label>
                <select id="dkind" className="input" value={dest.kind} onChange={(e) => {
                  const k = KINDS.find((x) => x.kind === e.target.value)!;
                  setDest({ ...dest, kind: k.kind, name: k.label, url: k.url });
                }}>
                  {KINDS.map((k) => <option key={k.kind} value={k.kind}>{k.label}</option>)}
                </select>
              </div>
              <div>
                <label className="label" htmlFor="dname">Name</label>
                <input id="dname" className="input" required value={dest.name} onChange={(e) => setDest({ ...dest, name: e.target.value })} />
              </div>
              <div>
                <label className="label" htmlFor="durl">Server URL</label>
                <input id="durl" className="input" required placeholder="rtmp://host/app" value={dest.url} onChange={(e) => setDest({ ...dest, url: e.target.value })} />
              </div>
              <div>
                <label className="label" htmlFor="dkey">Stream key</label>
                <input id="dkey" type="password" className="input" required autoComplete="off" value={dest.streamKey} onChange={(e) => setDest({ ...dest, streamKey: e.target.value })} />
              </div>
              <button className="btn-primary w-fit" disabled={ended}>Add destination</button>
            </form>
          </section>

          <section className="card space-y-2" aria-label="OBS ingest">
            <h2 className="font-semibold">Stream from OBS</h2>
            <p className="text-sm text-zinc-400">
              {b.ingest?.rtmp
                ? "OBS publishing with this key is the show: it goes live, to every destination and the watch page."
                : "OBS publishing with this key joins the studio as a participant named OBS, for you to put on stage."}{" "}
              A new key replaces the old one at once; it is shown only now.
            </p>
            <button className="btn" disabled={ended} onClick={() => void run(async () => setIngest(await api("POST", `/api/broadcasts/${b.id}/ingest-key`)))}>New ingest key</button>
            {ingest && (
              <dl className="text-sm">
                <dt className="text-zinc-400">Server</dt><dd><code>{ingest.serverUrl}</code></dd>
                <dt className="text-zinc-400">Stream key</dt><dd><code>{ingest.streamKey}</code></dd>
              </dl>
            )}
          </section>
        </div>
      </div>
    </Page>
  );
}
