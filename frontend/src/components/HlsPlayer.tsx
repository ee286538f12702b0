// The watch page's player: hls.js (loaded only when a stream plays), or native HLS where
// the browser has it and hls.js does not apply.
import { useEffect, useRef, useState } from "react";

export function HlsPlayer({ src, lowLatency, poster }: { src: string; lowLatency?: boolean; poster?: string | null }) {
  const ref = useRef<HTMLVideoElement>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const video = ref.current;
    if (!video) return;
    setError(null);
    let destroy = () => {};
    let cancelled = false;
    void import("hls.js").then(({ default: Hls }) => {
      if (cancelled) return;
      if (!Hls.isSupported()) {
        video.src = src;
        void Promise.resolve(video.play()).catch(() => undefined);
        return;
      }
      // Low latency: the playlist's PART-HOLD-BACK sets how far behind live to play (a
      // liveSyncDuration here would override it).
      const hls = new Hls(lowLatency ? { lowLatencyMode: true } : { lowLatencyMode: false, liveSyncDurationCount: 3 });
      destroy = () => hls.destroy();
      hls.loadSource(src);
      hls.attachMedia(video);
      hls.on(Hls.Events.MANIFEST_PARSED, () => void Promise.resolve(video.play()).catch(() => undefined));
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (!data.fatal) return;
        if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
          setError("The stream is not reachable; retrying…");
          setTimeout(() => hls.startLoad(), 2000);
        } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else {
          setError("This stream cannot be played.");
        }
      });
      hls.on(Hls.Events.FRAG_LOADED, () => setError(null));
    });
    return () => {
      cancelled = true;
      destroy();
    };
  }, [src, lowLatency]);
  return (
    <div>
      <video ref={ref} data-testid="player" data-player="hls" aria-label="Live video" controls muted playsInline poster={poster ?? undefined} className="aspect-video w-full rounded-lg bg-black" />
      {error && <p role="status" className="mt-1 text-sm text-amber-300">{error}</p>}
    </div>
  );
}
