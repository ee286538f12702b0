// A guest's way in from an invite link: a name, devices, then backstage.
import { useEffect, useRef, useState, type FormEvent } from "react";
import { useParams, useSearchParams } from "react-router-dom";
import { useAuth } from "../stores/auth";
import { useRealtime } from "../stores/realtime";
import { useStudio } from "../stores/studio";
import { DevicePreview } from "../components/DevicePreview";
import { StudioRoom } from "../components/StudioRoom";
import { ErrorBanner, Page } from "../components/ui";

export default function Join() {
  const { id = "" } = useParams();
  const [params] = useSearchParams();
  const invite = params.get("invite");
  const acceptInvite = useAuth((s) => s.acceptInvite);
  const studio = useStudio();
  const openChat = useRealtime((s) => s.open);
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const media = useRef<MediaStream | null>(null);
  const [haveMedia, setHaveMedia] = useState(false);
  useEffect(() => () => useStudio.getState().leave(), []);
  const join = async (e: FormEvent) => {
    e.preventDefault();
    if (!invite || !media.current) return;
    setError(null);
    try {
      await acceptInvite(invite, name);
      const token = useAuth.getState().token!;
      studio.join(id, token, media.current);
      openChat(id, "studio", token);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  if (!invite) return <Page title="Join the studio"><ErrorBanner error="This link has no invite in it. Ask the host for a new invite link." /></Page>;
  if (studio.status === "joined" || studio.status === "reconnecting")
    return (
      <Page title="Studio">
        <p className="mb-3 text-sm text-zinc-400">You are backstage until the host puts you on stage.</p>
        <StudioRoom host={false} />
      </Page>
    );
  return (
    <Page title="Join the studio">
      <form onSubmit={join} className="card max-w-xl space-y-3">
        <ErrorBanner error={error ?? studio.error} />
        <div>
          <label className="label" htmlFor="guest-name">Your name</label>
          <input id="guest-name" className="input" required maxLength={60} value={name} onChange={(e) => setName(e.target.value)} />
        </div>
        <DevicePreview onReady={(s) => { media.current = s; setHaveMedia(!!s); }} />
        <button className="btn-primary" disabled={!haveMedia || studio.status === "joining"}>Join backstage</button>
      </form>
    </Page>
  );
}
