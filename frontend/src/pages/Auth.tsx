import { useState, type FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import { useAuth } from "../stores/auth";
import { ErrorBanner, Page } from "../components/ui";

export function AuthPage({ mode }: { mode: "signin" | "signup" }) {
  const { login, register } = useAuth();
  const nav = useNavigate();
  const [params] = useSearchParams();
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (mode === "signup") await register(name, email, password);
      else await login(email, password);
      nav(params.get("next") ?? "/broadcasts");
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Page title={mode === "signup" ? "Create your account" : "Sign in"}>
      <form onSubmit={submit} className="card max-w-sm space-y-3">
        <ErrorBanner error={error} />
        {mode === "signup" && (
          <div>
            <label className="label" htmlFor="name">Display name</label>
            <input id="name" className="input" required value={name} onChange={(e) => setName(e.target.value)} autoComplete="name" />
          </div>
        )}
        <div>
          <label className="label" htmlFor="email">Email</label>
          <input id="email" type="email" className="input" required value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="email" />
        </div>
        <div>
          <label className="label" htmlFor="password">Password</label>
          <input id="password" type="password" className="input" required minLength={8} value={password} onChange={(e) => setPassword(e.target.value)} autoComplete={mode === "signup" ? "new-password" : "current-password"} />
        </div>
        <button className="btn-primary" disabled={busy}>{mode === "signup" ? "Sign up" : "Sign in"}</button>
        <p className="text-sm text-zinc-400">
          {mode === "signup" ? (
            <>Have an account? <Link className="text-sky-400" to="/signin">Sign in</Link></>
          ) : (
            <>New here? <Link className="text-sky-400" to="/signup">Create an account</Link></>
          )}
        </p>
      </form>
    </Page>
  );
}
