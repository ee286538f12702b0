// Small shared pieces: the error banner, video and audio bound to a track, the page frame.
import { useEffect, useRef, type ReactNode } from "react";

export function ErrorBanner({ error, onClose }: { error: string | null; onClose?: () => void }) {
  if (!error) return null;
  return (
    <div role="alert" className="mb-4 flex items-start justify-between gap-4 rounded-md border border-red-800 bg-red-950 px-4 py-2 text-sm text-red-200">
      <span>{error}</span>
      {onClose && (
        <button className="text-red-300 hover:text-white" onClick={onClose} aria-label="Dismiss error">
          ×
        </button>
      )}
    </div>
  );
}

export function TrackVideo({
  stream,
  track,
  muted,
  label,
  className,
  onSize,
}: {
  stream?: MediaStream | null;
  track?: MediaStreamTrack;
  muted?: boolean;
  label: string;
  className?: string;
  /** Called with the size the video is shown at, in device pixels, whenever it changes. */
  onSize?: (width: number, height: number) => void;
}) {
  const ref = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    const v = ref.current;
    if (!v) return;
    v.srcObject = stream ?? (track ? new MediaStream([track]) : null);
  }, [stream, track]);
  // The latest callback, so that a parent's new closure each render does not re-observe.
  const sized = useRef(onSize);
  sized.current = onSize;
  const observe = !!onSize;
  useEffect(() => {
    const v = ref.current;
    if (!v || !observe || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(([e]) => {
      const dpr = window.devicePixelRatio || 1;
      sized.current?.(e.contentRect.width * dpr, e.contentRect.height * dpr);
    });
    ro.observe(v);
    return () => {
      ro.disconnect();
      // Unmounted: no longer shown.
      sized.current?.(0, 0);
    };
  }, [observe, track, stream]);
  return <video ref={ref} aria-label={label} autoPlay playsInline muted={muted} className={className} />;
}

export function TrackAudio({ track }: { track: MediaStreamTrack }) {
  const ref = useRef<HTMLAudioElement>(null);
  useEffect(() => {
    if (ref.current) ref.current.srcObject = new MediaStream([track]);
  }, [track]);
  return <audio ref={ref} autoPlay />;
}

export function Page({ title, actions, children }: { title: string; actions?: ReactNode; children: ReactNode }) {
  useEffect(() => {
    document.title = `${title} · Castyard`;
  }, [title]);
  return (
    <div className="mx-auto max-w-6xl p-4 md:p-6">
      <div className="mb-4 flex flex-wrap items-center justify-between gap-2">
        <h1 className="text-xl font-semibold">{title}</h1>
        {actions}
      </div>
      {children}
    </div>
  );
}
