// Camera and microphone preview with device selection, before entering the studio.
import { useEffect, useState } from "react";
import { TrackVideo } from "./ui";
import { useStudio } from "../stores/studio";

export function DevicePreview({ onReady }: { onReady: (s: MediaStream | null) => void }) {
  const [devices, setDevices] = useState<MediaDeviceInfo[]>([]);
  const [camera, setCamera] = useState("");
  const [mic, setMic] = useState("");
  const [stream, setStream] = useState<MediaStream | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let s: MediaStream | null = null;
    let cancelled = false;
    navigator.mediaDevices
      .getUserMedia({
        video: camera ? { deviceId: { exact: camera }, width: 1280, height: 720 } : { width: 1280, height: 720 },
        audio: mic ? { deviceId: { exact: mic } } : true,
      })
      .then(async (got) => {
        if (cancelled) return got.getTracks().forEach((t) => t.stop());
        s = got;
        setStream(got);
        setError(null);
        onReady(got);
        setDevices(await navigator.mediaDevices.enumerateDevices());
      })
      .catch((e) => {
        setError(`Camera or microphone unavailable: ${e.message}. Allow access in the browser, or pick another device.`);
        onReady(null);
      });
    return () => {
      cancelled = true;
      // The studio owns the stream it joined with; only a replaced or abandoned preview is stopped.
      if (s && s !== useStudio.getState().media) s.getTracks().forEach((t) => t.stop());
    };
  }, [camera, mic]);
  const cams = devices.filter((d) => d.kind === "videoinput");
  const mics = devices.filter((d) => d.kind === "audioinput");
  return (
    <div className="space-y-3">
      <TrackVideo stream={stream} muted label="Your camera preview" className="aspect-video w-full rounded-lg bg-black object-cover" />
      {error && <p role="alert" className="text-sm text-red-300">{error}</p>}
      <div className="grid gap-2 sm:grid-cols-2">
        <div>
          <label className="label" htmlFor="cam">Camera</label>
          <select id="cam" className="input" value={camera} onChange={(e) => setCamera(e.target.value)}>
            <option value="">Default camera</option>
            {cams.map((d) => <option key={d.deviceId} value={d.deviceId}>{d.label || "Camera"}</option>)}
          </select>
        </div>
        <div>
          <label className="label" htmlFor="mic">Microphone</label>
          <select id="mic" className="input" value={mic} onChange={(e) => setMic(e.target.value)}>
            <option value="">Default microphone</option>
            {mics.map((d) => <option key={d.deviceId} value={d.deviceId}>{d.label || "Microphone"}</option>)}
          </select>
        </div>
      </div>
    </div>
  );
}
