import { useEffect, useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";
import { api, type BroadcastView } from "../api/client";
import { ErrorBanner, Page } from "../components/ui";

export function Broadcasts() {
  const [list, setList] = useState<BroadcastView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [title, setTitle] = useState("");
  const nav = useNavigate();
  useEffect(() => {
    api<BroadcastView[]>("GET", "/api/broadcasts").then(setList, (e) => setError(e.message));
  }, []);
  const create = async (e: FormEvent) => {
    e.preventDefault();
    try {
      const b = await api<BroadcastView>("POST", "/api/broadcasts", { title, destinations: [] });
      nav(`/broadcasts/${b.id}`);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <Page title="Broadcasts">
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <form onSubmit={create} className="card mb-6 flex flex-wrap items-end gap-2">
        <div className="min-w-64 flex-1">
          <label className="label" htmlFor="new-title">New broadcast</label>
          <input id="new-title" className="input" required maxLength={200} placeholder="Title" value={title} onChange={(e) => setTitle(e.target.value)} />
        </div>
        <button className="btn-primary">Create broadcast</button>
      </form>
      {list?.length === 0 && <p className="text-zinc-400">No broadcasts yet.</p>}
      <ul className="divide-y divide-zinc-800">
        {list?.map((b) => (
          <li key={b.id} className="flex flex-wrap items-center gap-3 py-3">
            <div className="min-w-0 flex-1">
              <Link to={`/broadcasts/${b.id}`} className="font-medium hover:underline">{b.title}</Link>
              <p className="text-xs text-zinc-400">
                {b.phase ?? b.state}
                {b.scheduledStart && ` · scheduled ${new Date(b.scheduledStart).toLocaleString()}`}
              </p>
            </div>
            {b.state !== "Ended" && <Link className="btn" to={`/studio/${b.id}`}>Open studio</Link>}
            <Link className="btn" to={`/watch/${b.id}`}>Watch page</Link>
          </li>
        ))}
      </ul>
    </Page>
  );
}
