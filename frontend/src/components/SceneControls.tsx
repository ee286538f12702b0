// The host's live scene: banners and lower thirds, the ticker, a "starting soon" slate and the
// brand colour, sent to the compositor through the API; the layout is part of the spec.
import { useEffect, useState, type FormEvent } from "react";
import { api, type Layout } from "../api/client";

const LAYOUTS: Layout[] = ["grid", "spotlight", "sidebar", "solo", "picture-in-picture"];

interface Scene {
  banner?: { text: string; style: "banner" | "lower-third" } | null;
  ticker?: string | null;
  slate?: unknown;
  brand?: { color?: string | null };
}

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
      {!running && <p className="text-xs text-zinc-400">Banners, the ticker, slates and the brand colour apply while the show runs (live or recording).</p>}
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
      <p className="text-xs text-zinc-500">Logo, background and overlay pictures: uploads do not reach the compositor yet.</p>
    </section>
  );
}
