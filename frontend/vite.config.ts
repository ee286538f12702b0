/// <reference types="node" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Plugin } from "vite";

// MediaPipe's selfie segmentation is a classic script plus its WebAssembly and model: served
// as files under /mediapipe/ (copied into the build, read from node_modules in dev), so the
// studio fetches nothing from a CDN and its bundle does not carry 12 MB it rarely needs.
function mediapipe(): Plugin {
  const dir = fileURLToPath(new URL("node_modules/@mediapipe/selfie_segmentation", import.meta.url));
  const files = () => readdirSync(dir).filter((f) => /\.(js|wasm|tflite|binarypb|data)$/.test(f));
  const types: Record<string, string> = { js: "text/javascript", wasm: "application/wasm" };
  return {
    name: "castyard-mediapipe",
    configureServer(server) {
      server.middlewares.use("/mediapipe/", (req, res, next) => {
        const f = (req.url ?? "").replace(/^\//, "").split("?")[0];
        if (!files().includes(f)) return next();
        res.setHeader("content-type", types[f.split(".").pop()!] ?? "application/octet-stream");
        res.end(readFileSync(join(dir, f)));
      });
    },
    generateBundle() {
      for (const f of files()) this.emitFile({ type: "asset", fileName: `mediapipe/${f}`, source: readFileSync(join(dir, f)) });
    },
  };
}

// `npm run dev` talks to a `castyard up` on :8080; the build is served by castyard itself.
export default defineConfig({
  plugins: [react(), tailwindcss(), mediapipe()],
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:8080", ws: true },
      "/hls": "http://127.0.0.1:8080",
      "/live": "http://127.0.0.1:8080",
    },
  },
  build: { chunkSizeWarningLimit: 700 },
  test: { environment: "jsdom", include: ["src/**/*.test.{ts,tsx}"] },
});
