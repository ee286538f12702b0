import { useEffect, useState } from "react";
import { Link } from "react-router-dom";
import { api, type StreamView } from "../api/client";
import { ErrorBanner, Page } from "../components/ui";

export function Home() {
  const [streams, setStreams] = useState<StreamView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    const load = () =>
      api<StreamView[]>("GET", "/api/streams")
        .then((s) => live && (setStreams(s), setError(null)))
        .catch((e) => live && setError(e.message));
    void load();
    const t = setInterval(load, 10_000);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, []);
  return (
    <Page title="Live now">
      <ErrorBanner error={error} />
      {streams?.length === 0 && <p className="text-zinc-400">Nobody is live right now.</p>}
      <ul className="grid gap-4 sm:grid-cols-2 lg:grid-cols-3">
        {streams?.map((s) => (
          <li key={s.id}>
            <Link to={`/watch/${s.id}`} className="block rounded-lg focus-visible:outline focus-visible:outline-2 focus-visible:outline-sky-400">
              <div className="relative aspect-video overflow-hidden rounded-lg bg-zinc-800">
                {s.thumbnailUrl ? (
                  <img src={s.thumbnailUrl} alt="" className="h-full w-full object-cover" />
                ) : (
                  <div className="flex h-full items-center justify-center text-zinc-500">No preview yet</div>
                )}
                <span className="absolute left-2 top-2 rounded bg-red-600 px-1.5 text-xs font-bold">LIVE</span>
                <span className="absolute bottom-2 right-2 rounded bg-black/70 px-1.5 text-xs">{s.viewers} watching</span>
              </div>
              <p className="mt-2 font-medium">{s.title}</p>
              <p className="text-sm text-zinc-400">{s.hostName}</p>
            </Link>
          </li>
        ))}
      </ul>
    </Page>
  );
}
