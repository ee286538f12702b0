// Low-latency playback of an OBS ingest over HTTP-FLV (flv.js on MSE, loaded only when such a
// stream plays); where the browser cannot, or the FLV connection fails, the HLS player instead.
import { useEffect, useRef, useState } from "react";
import { HlsPlayer } from "./HlsPlayer";

export function FlvPlayer({ src, hls, poster }: { src: string; hls?: string | null; poster?: string | null }) {
  const ref = useRef<HTMLVideoElement>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    const video = ref.current;
    if (!video || failed) return;
    let destroy = () => {};
    let cancelled = false;
    void import("flv.js").then(({ default: flvjs }) => {
      if (cancelled) return;
      if (!flvjs.isSupported()) return setFailed(true);
      // No stash buffer: frames go to the decoder as they arrive, which is what makes FLV faster than HLS.
      const player = flvjs.createPlayer({ type: "flv", isLive: true, url: src }, { enableStashBuffer: false });
      destroy = () => player.destroy();
      player.attachMediaElement(video);
      player.load();
      player.on(flvjs.Events.ERROR, () => setFailed(true));
      void Promise.resolve(player.play()).catch(() => undefined);
    }, () => setFailed(true));
    return () => {
      cancelled = true;
      destroy();
    };
  }, [src, failed]);
  if (failed) {
    return hls ? <HlsPlayer src={hls} poster={poster} /> : <p role="status" className="text-sm text-amber-300">This stream cannot be played here.</p>;
  }
  return (
    <video ref={ref} data-testid="player" data-player="flv" aria-label="Live video" controls muted playsInline poster={poster ?? undefined} className="aspect-video w-full rounded-lg bg-black" />
  );
}
