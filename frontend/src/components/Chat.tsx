// A chat panel bound to the realtime store (studio chat or the watch page's live chat).
import { useState, type FormEvent } from "react";
import { useRealtime, type RealtimeStore } from "../stores/realtime";

export function Chat({
  title,
  canSend,
  signInHint,
  store = useRealtime,
}: {
  title: string;
  canSend: boolean;
  signInHint?: React.ReactNode;
  store?: RealtimeStore;
}) {
  const { messages, send, connection, error } = store();
  const [text, setText] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const t = text.trim();
    if (t && send(t)) setText("");
  };
  return (
    <section aria-label={title} className="card flex h-full min-h-64 flex-col">
      <h2 className="mb-2 flex items-center justify-between text-sm font-semibold">
        {title}
        {connection !== "open" && <span className="text-xs font-normal text-amber-400">{connection}…</span>}
      </h2>
      <ol className="flex-1 space-y-1 overflow-y-auto text-sm" aria-live="polite">
        {messages.map((m) => (
          <li key={m.id} data-testid="chat-message">
            <span className="font-medium text-sky-300">{m.displayName}</span>{" "}
            <span className="break-words">{m.text}</span>
          </li>
        ))}
        {messages.length === 0 && <li className="text-zinc-500">No messages yet.</li>}
      </ol>
      {error && <p role="alert" className="mt-1 text-xs text-red-300">{error}</p>}
      {canSend ? (
        <form onSubmit={submit} className="mt-2 flex gap-2">
          <label className="sr-only" htmlFor={`chat-${title.replace(/\s+/g, "-")}`}>Message</label>
          <input id={`chat-${title.replace(/\s+/g, "-")}`} className="input" value={text} maxLength={500} onChange={(e) => setText(e.target.value)} placeholder="Say something" />
          <button className="btn-primary" disabled={connection !== "open"}>Send</button>
        </form>
      ) : (
        signInHint
      )}
    </section>
  );
}
