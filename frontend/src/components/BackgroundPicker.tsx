// One's own camera background: as it is, blurred, or replaced by a picture chosen on this device
// (it never leaves the browser; only the composed camera is sent).
import { useEffect, useRef, useState } from "react";
import { useStudio } from "../stores/studio";

export function BackgroundPicker() {
  const { background, backgroundStarting, setBackground } = useStudio();
  const [choice, setChoice] = useState<"none" | "blur" | "image">(background.kind);
  const url = useRef<string | null>(null);
  useEffect(() => setChoice(background.kind), [background.kind]);
  // The picture's address lives as long as it is the background.
  useEffect(() => () => void (url.current && URL.revokeObjectURL(url.current)), []);
  const usePicture = async (file: File | undefined) => {
    if (!file) return;
    const old = url.current;
    url.current = URL.createObjectURL(file);
    await setBackground({ kind: "image", url: url.current });
    if (old) URL.revokeObjectURL(old);
  };
  return (
    <div className="flex flex-wrap items-center gap-2">
      <label className="text-sm" htmlFor="background">Background</label>
      <select
        id="background"
        className="input w-auto"
        value={choice}
        disabled={backgroundStarting}
        onChange={(e) => {
          const v = e.target.value as "none" | "blur" | "image";
          setChoice(v);
          // A picture applies once one is chosen.
          if (v !== "image") void setBackground({ kind: v });
        }}
      >
        <option value="none">As it is</option>
        <option value="blur">Blurred</option>
        <option value="image">Picture…</option>
      </select>
      {choice === "image" && (
        <span>
          <label className="sr-only" htmlFor="background-picture">Background picture</label>
          <input id="background-picture" type="file" accept="image/png,image/jpeg,image/webp" className="text-sm" disabled={backgroundStarting} onChange={(e) => void usePicture(e.target.files?.[0])} />
        </span>
      )}
      {backgroundStarting && <span role="status" className="text-xs text-zinc-400">Starting the background effect…</span>}
    </div>
  );
}
