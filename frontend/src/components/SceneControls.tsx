// The host's live scene: banners and lower thirds, the ticker, a "starting soon" slate, the
// brand colour and pictures, sent to the compositor through the API; the layout is part of the spec.
import { useEffect, useState, type FormEvent } from "react";
import { api, type Layout } from "../api/client";

const LAYOUTS: Layout[] = ["grid", "spotlight", "sidebar", "solo", "picture-in-picture"];

interface Scene {
  banner?: { text: string; style: "banner" | "lower-third" } | null;
  ticker?: string | null;
  slate?: unknown;
  brand?: Brand;
}

type Picture = "logo" | "background" | "overlay";
type Brand = { color?: string | null } & Partial<Record<Picture, string | null>>;
const PICTURES: Picture[] = ["logo", "background", "overlay"];

export function SceneControls({
  broadcastId,
  layout,
  running,
  setLayout,
}: {
  broadcastId: string;
  layout: Layout;
  running: boolean;
  setLayout: (l: Layout) => Promise<void>;
}) {
  const [scene, setScene] = useState<Scene | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [banner, setBanner] = useState("");
  const [style, setStyle] = useState<"banner" | "lower-third">("banner");
  const [ticker, setTicker] = useState("");
  const [color, setColor] = useState("#0ea5e9");
  const url = `/api/broadcasts/${broadcastId}/scene`;
  useEffect(() => {
    if (!running) return setScene(null);
    api<Scene>("GET", url).then(setScene, () => undefined);
  }, [running, url]);
  const send = async (cmd: unknown) => {
    setBusy(true);
    setError(null);
    try {
      setScene(await api<Scene>("POST", url, cmd));
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  // A picture is uploaded to the host's library, then put into the brand by its id.
  const setPicture = async (kind: Picture, file: File | undefined) => {
    if (!file) return;
    setBusy(true);
    setError(null);
    try {
      const form = new FormData();
      form.append("file", file);
      const up = await api<{ id: string }>("POST", `/api/upload?kind=${kind}`, form);
      setScene(await api<Scene>("POST", url, { type: "set-brand", brand: { ...(scene?.brand ?? {}), [kind]: up.id } }));
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const showBanner = (e: FormEvent) => {
    e.preventDefault();
    void send({ type: "show-banner", banner: { text: banner, style } });
  };
  const off = !running || busy;
  return (
    <section className="card space-y-3" aria-label="Scene">
      <h2 className="text-sm font-semibold">Layout</h2>
      <div className="flex flex-wrap gap-1" role="group" aria-label="Layout">
        {LAYOUTS.map((l) => (
          <button key={l} className={`btn ${layout === l ? "bg-sky-700" : ""}`} aria-pressed={layout === l} disabled={busy} onClick={() => void setLayout(l)}>
            {l}
          </button>
        ))}
      </div>
      {!running && <p className="text-xs text-zinc-400">Banners, the ticker, slates and the brand apply while the show runs (live or recording).</p>}
      {error && <p role="alert" className="text-sm text-red-300">{error}</p>}
      <form onSubmit={showBanner} className="space-y-2" aria-label="Banner">
        <label className="label" htmlFor="banner-text">Banner text</label>
        <input id="banner-text" className="input" required maxLength={200} value={banner} onChange={(e) => setBanner(e.target.value)} />
        <div className="flex flex-wrap items-center gap-2">
          <label className="text-sm"><input type="radio" name="style" checked={style === "banner"} onChange={() => setStyle("banner")} /> Banner</label>
          <label className="text-sm"><input type="radio" name="style" checked={style === "lower-third"} onChange={() => setStyle("lower-third")} /> Lower third</label>
          <button className="btn-primary" disabled={off}>Show banner</button>
          <button type="button" className="btn" disabled={off || !scene?.banner} onClick={() => void send({ type: "hide-banner" })}>Hide banner</button>
        </div>
        {scene?.banner && <p role="status" data-testid="on-screen-banner" className="text-xs text-emerald-400">On screen: {scene.banner.text}</p>}
      </form>
      <form className="space-y-2" aria-label="Ticker" onSubmit={(e) => { e.preventDefault(); void send({ type: "ticker", text: ticker }); }}>
        <label className="label" htmlFor="ticker-text">Ticker text</label>
        <input id="ticker-text" className="input" required maxLength={500} value={ticker} onChange={(e) => setTicker(e.target.value)} />
        <div className="flex gap-2">
          <button className="btn" disabled={off}>Run ticker</button>
          <button type="button" className="btn" disabled={off || !scene?.ticker} onClick={() => void send({ type: "ticker", text: null })}>Stop ticker</button>
        </div>
      </form>
      <div className="flex flex-wrap items-center gap-2">
        <button className="btn" disabled={off} onClick={() => void send(scene?.slate ? { type: "hide-slate" } : { type: "show-slate", slate: { kind: "starting-soon", text: null } })}>
          {scene?.slate ? "Hide slate" : "Starting soon slate"}
        </button>
        <label className="text-sm" htmlFor="brand-color">Brand colour</label>
        <input id="brand-color" type="color" value={color} onChange={(e) => setColor(e.target.value)} className="h-8 w-10 bg-transparent" />
        <button className="btn" disabled={off} onClick={() => void send({ type: "set-brand", brand: { ...(scene?.brand ?? {}), color } })}>Apply colour</button>
      </div>
      <div className="grid gap-2 sm:grid-cols-3" role="group" aria-label="Brand pictures">
        {PICTURES.map((kind) => (
          <div key={kind} className="space-y-1">
            <label className="label" htmlFor={`brand-${kind}`}>{kind[0].toUpperCase() + kind.slice(1)} (PNG or JPEG)</label>
            <input id={`brand-${kind}`} type="file" accept="image/png,image/jpeg" disabled={off} className="block w-full text-xs" onChange={(e) => void setPicture(kind, e.target.files?.[0])} />
            {scene?.brand?.[kind] && (
              <button type="button" className="btn text-xs" disabled={off} onClick={() => void send({ type: "set-brand", brand: { ...scene.brand, [kind]: null } })}>
                Remove {kind}
              </button>
            )}
          </div>
        ))}
      </div>
    </section>
  );
}
