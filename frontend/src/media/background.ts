// Background blur and virtual backgrounds for one's own camera: MediaPipe selfie segmentation
// (shipped in its npm package and served by Castyard itself), composed on a canvas whose track
// replaces the camera's.
import type { SelfieSegmentation as Segmenter, Results } from "@mediapipe/selfie_segmentation";

export type Background = { kind: "none" } | { kind: "blur" } | { kind: "image"; url: string };

/** Where the build puts the package's script, WebAssembly and model (see vite.config.ts). */
export const MEDIAPIPE_DIR = `${import.meta.env.BASE_URL}mediapipe/`;

export interface Effect {
  /** The composed camera: send this instead of the camera's own track. */
  track: MediaStreamTrack;
  set: (bg: Background) => Promise<void>;
  stop: () => void;
}

declare global {
  interface Window {
    SelfieSegmentation?: typeof Segmenter;
  }
}

// The package is a classic script that defines a global, not an ES module, and weighs 12 MB
// with its WebAssembly: it is fetched on first use, never with the studio's bundle.
let loading: Promise<typeof Segmenter> | null = null;
function loadSegmenter(): Promise<typeof Segmenter> {
  loading ??= new Promise<typeof Segmenter>((ok, fail) => {
    if (window.SelfieSegmentation) return ok(window.SelfieSegmentation);
    const s = document.createElement("script");
    s.src = `${MEDIAPIPE_DIR}selfie_segmentation.js`;
    s.crossOrigin = "anonymous";
    s.onload = () => (window.SelfieSegmentation ? ok(window.SelfieSegmentation) : fail(new Error("the segmentation script defined nothing")));
    s.onerror = () => fail(new Error("the segmentation script could not be loaded"));
    document.head.appendChild(s);
  }).catch((e) => {
    loading = null;
    throw e;
  });
  return loading;
}

/** The rectangle that covers a w×h canvas with a picture of pw×ph, cropped, centred. Pure. */
export function cover(pw: number, ph: number, w: number, h: number): [number, number, number, number] {
  const k = Math.max(w / pw, h / ph);
  const dw = pw * k;
  const dh = ph * k;
  return [(w - dw) / 2, (h - dh) / 2, dw, dh];
}

async function loadPicture(url: string): Promise<HTMLImageElement> {
  const img = new Image();
  img.src = url;
  try {
    await img.decode();
  } catch {
    throw new Error("that picture could not be read; choose a PNG, JPEG or WebP image");
  }
  return img;
}

// Browsers throttle timers and stop animation frames in a hidden tab, which would freeze the
// camera of a host who looks at another tab; a worker's timer keeps running.
function ticker(fps: number, tick: () => void): () => void {
  const src = `setInterval(() => postMessage(0), ${Math.round(1000 / fps)});`;
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const w = new Worker(url);
  w.onmessage = tick;
  return () => {
    w.terminate();
    URL.revokeObjectURL(url);
  };
}

/** Starts segmenting `camera`; resolves once the composed track carries its first frame. */
export async function startEffect(camera: MediaStreamTrack, bg: Background, fps = 30): Promise<Effect> {
  if (bg.kind === "none") throw new Error("no effect to start");
  const Seg = await loadSegmenter();
  const { width = 1280, height = 720 } = camera.getSettings();
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.srcObject = new MediaStream([camera]);
  await video.play();
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("this browser has no 2D canvas");

  let current = bg;
  let picture = bg.kind === "image" ? await loadPicture(bg.url) : null;
  let first: (() => void) | null = null;
  const seg = new Seg({ locateFile: (f) => `${MEDIAPIPE_DIR}${f}` });
  // The landscape model: 256x144 input, made for video calls, cheaper than the general one.
  seg.setOptions({ modelSelection: 1 });
  seg.onResults((r: Results) => {
    draw(ctx, r, current, picture, width, height);
    first?.();
    first = null;
  });
  let stopTicking = () => {};
  try {
    await seg.initialize();
    let busy = false;
    let next = 0;
    const ready = new Promise<void>((ok) => (first = ok));
    stopTicking = ticker(fps, () => {
      const start = performance.now();
      if (busy || start < next || video.readyState < 2) return;
      busy = true;
      seg.send({ image: video }).finally(() => {
        busy = false;
        // A frame blocks this thread while it runs (without a GPU, for 100 ms or more): rest at
        // least as long as it took, so the page, its controls and its sockets stay responsive.
        const end = performance.now();
        next = end + (end - start);
      });
    });
    const track = canvas.captureStream(fps).getVideoTracks()[0];
    // A segmenter that never answers (a broken WebGL) must not leave the control spinning.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, fail) => {
      timer = setTimeout(() => fail(new Error("the segmentation produced no picture in 30 s")), 30_000);
    });
    try {
      await Promise.race([ready, late]);
    } catch (e) {
      track.stop();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return {
      track,
      set: async (next) => {
        if (next.kind === "none") return;
        picture = next.kind === "image" ? await loadPicture(next.url) : null;
        current = next;
      },
      stop: () => {
        stopTicking();
        track.stop();
        video.srcObject = null;
        void seg.close();
      },
    };
  } catch (e) {
    stopTicking();
    video.srcObject = null;
    void seg.close();
    throw e;
  }
}

function draw(
  ctx: CanvasRenderingContext2D,
  r: Results,
  bg: Background,
  picture: HTMLImageElement | null,
  w: number,
  h: number,
) {
  ctx.save();
  ctx.clearRect(0, 0, w, h);
  // Keep the person: the mask's opacity, filled with the camera picture.
  ctx.drawImage(r.segmentationMask, 0, 0, w, h);
  ctx.globalCompositeOperation = "source-in";
  ctx.drawImage(r.image, 0, 0, w, h);
  // Then put the background behind them.
  ctx.globalCompositeOperation = "destination-over";
  if (bg.kind === "image" && picture) {
    ctx.drawImage(picture, ...cover(picture.naturalWidth, picture.naturalHeight, w, h));
  } else {
    const radius = Math.max(4, Math.round(w / 100));
    ctx.filter = `blur(${radius}px)`;
    // Drawn past the edges, so the blur does not fade into transparent borders.
    ctx.drawImage(r.image, -2 * radius, -2 * radius, w + 4 * radius, h + 4 * radius);
  }
  ctx.restore();
}
