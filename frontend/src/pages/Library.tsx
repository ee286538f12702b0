// Recordings: poster, length and size; play, download, delete.
import { useEffect, useState } from "react";
import { api, formatBytes, formatDuration, type RecordingView } from "../api/client";
import { ErrorBanner, Page } from "../components/ui";

export function Library() {
  const [list, setList] = useState<RecordingView[] | null>(null);
  const [playing, setPlaying] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = () => api<RecordingView[]>("GET", "/api/recordings").then(setList, (e) => setError(e.message));
  useEffect(() => {
    void load();
  }, []);
  const remove = async (r: RecordingView) => {
    if (!confirm(`Delete "${r.title}"? The file is removed too.`)) return;
    try {
      await api("DELETE", `/api/recordings/${r.id}`);
      await load();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <Page title="Library">
      <ErrorBanner error={error} onClose={() => setError(null)} />
      {list?.length === 0 && <p className="text-zinc-400">No recordings yet. Turn on Record in a broadcast.</p>}
      <ul className="grid gap-4 sm:grid-cols-2 lg:grid-cols-3">
        {list?.map((r) => (
          <li key={r.id} className="card" data-testid="recording">
            {playing === r.id ? (
              <video src={r.fileUrl} controls autoPlay aria-label={`Recording: ${r.title}`} className="aspect-video w-full rounded bg-black" />
            ) : (
              <button className="relative block aspect-video w-full overflow-hidden rounded bg-zinc-800" onClick={() => setPlaying(r.id)} aria-label={`Play ${r.title}`}>
                {r.posterUrl && <img src={r.posterUrl} alt="" className="h-full w-full object-cover" />}
                <span className="absolute bottom-1 right-1 rounded bg-black/70 px-1.5 text-xs">{formatDuration(r.durationMs)}</span>
              </button>
            )}
            <p className="mt-2 font-medium">{r.title}</p>
            <p className="text-xs text-zinc-400">{new Date(r.createdAt).toLocaleString()} · {formatBytes(r.sizeBytes)}</p>
            <div className="mt-2 flex gap-2">
              <a className="btn" href={r.fileUrl} download={`${r.title}.mp4`}>Download</a>
              <button className="btn-danger" onClick={() => void remove(r)}>Delete</button>
            </div>
          </li>
        ))}
      </ul>
    </Page>
  );
}
