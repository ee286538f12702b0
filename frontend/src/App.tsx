// Routes and the frame around them: sidebar navigation, the signed-in user.
import { lazy, Suspense, useEffect, useState, type ComponentType } from "react";
import { BrowserRouter, Link, NavLink, Navigate, Route, Routes, useLocation } from "react-router-dom";
import { useAuth } from "./stores/auth";
import { Home } from "./pages/Home";
import { AuthPage } from "./pages/Auth";
import { Broadcasts } from "./pages/Broadcasts";
import { BroadcastEdit } from "./pages/BroadcastEdit";
import { Watch } from "./pages/Watch";
import { Library } from "./pages/Library";

// The studio (WebRTC, devices) loads only when someone opens it. Opened directly (a bookmark,
// an invite link), its code downloads while the session is restored, and once there it renders
// at once: through lazy() it would suspend anyway, and React holds a revealed Suspense
// boundary back for 300 ms.
function preloaded(load: () => Promise<{ default: ComponentType }>, now: boolean): ComponentType {
  let loaded: ComponentType | null = null;
  const promise = () => load().then((m) => (loaded = m.default) && m);
  if (now) void promise();
  const Lazy = lazy(promise);
  return function Page() {
    // Chosen once per mount: switching from Lazy to the loaded page would remount it.
    const [Chosen] = useState<ComponentType>(() => loaded ?? Lazy);
    return <Chosen />;
  };
}
const path = typeof location === "undefined" ? "" : location.pathname;
const Studio = preloaded(() => import("./pages/Studio"), path.startsWith("/studio/"));
const Join = preloaded(() => import("./pages/Join"), path.startsWith("/join/"));

function RequireHost({ children }: { children: React.ReactNode }) {
  const { user, ready } = useAuth();
  const loc = useLocation();
  if (!ready) return <p className="p-6 text-zinc-400">Loading…</p>;
  if (!user || user.role !== "host") return <Navigate to={`/signin?next=${encodeURIComponent(loc.pathname)}`} replace />;
  return <>{children}</>;
}

function Sidebar() {
  const { user, logout } = useAuth();
  const item = ({ isActive }: { isActive: boolean }) =>
    `block rounded-md px-3 py-2 text-sm ${isActive ? "bg-zinc-800 text-white" : "text-zinc-300 hover:bg-zinc-900"}`;
  return (
    <nav aria-label="Main" className="flex shrink-0 flex-row gap-1 border-b border-zinc-800 p-2 md:w-52 md:flex-col md:border-b-0 md:border-r">
      <Link to="/" className="mb-0 px-3 py-2 text-lg font-bold text-sky-400 md:mb-4">Castyard</Link>
      <NavLink to="/" end className={item}>Home</NavLink>
      {user?.role === "host" && (
        <>
          <NavLink to="/broadcasts" className={item}>Broadcasts</NavLink>
          <NavLink to="/library" className={item}>Library</NavLink>
        </>
      )}
      <div className="ml-auto md:ml-0 md:mt-auto">
        {user?.role === "host" ? (
          <div className="px-3 py-2 text-sm">
            <p className="truncate text-zinc-400">{user.displayName}</p>
            <button className="mt-1 text-sky-400 hover:underline" onClick={() => void logout()}>Sign out</button>
          </div>
        ) : (
          <NavLink to="/signin" className={item}>Sign in</NavLink>
        )}
      </div>
    </nav>
  );
}

export function App() {
  const init = useAuth((s) => s.init);
  useEffect(() => {
    void init();
  }, [init]);
  return (
    <BrowserRouter>
      <div className="flex min-h-screen flex-col md:flex-row">
        <Sidebar />
        <main className="min-w-0 flex-1">
          <Suspense fallback={<p className="p-6 text-zinc-400">Loading…</p>}>
            <Routes>
              <Route path="/" element={<Home />} />
              <Route path="/signin" element={<AuthPage mode="signin" />} />
              <Route path="/signup" element={<AuthPage mode="signup" />} />
              <Route path="/broadcasts" element={<RequireHost><Broadcasts /></RequireHost>} />
              <Route path="/broadcasts/:id" element={<RequireHost><BroadcastEdit /></RequireHost>} />
              <Route path="/studio/:id" element={<RequireHost><Studio /></RequireHost>} />
              <Route path="/join/:id" element={<Join />} />
              <Route path="/watch/:id" element={<Watch />} />
              <Route path="/library" element={<RequireHost><Library /></RequireHost>} />
              <Route path="*" element={<p className="p-6">This page does not exist. <Link className="text-sky-400" to="/">Home</Link></p>} />
            </Routes>
          </Suspense>
        </main>
      </div>
    </BrowserRouter>
  );
}
