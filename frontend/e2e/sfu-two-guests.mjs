// Two browser guests in one studio, through the API's signalling relay and the real SFU:
// each must receive the other's audio and video (getStats: bytes and frames decoded rising),
// a screen share must arrive as a second video track, and leaving must remove the tiles.
// Usage: node e2e/sfu-two-guests.mjs <api base URL> <broadcast id> <token A> <token B>
// Prints one JSON line of what it saw; exits non-zero on the first failed expectation.
import { launch } from "./browser.mjs";

const [base, broadcast, tokenA, tokenB] = process.argv.slice(2);
if (!tokenB) {
  console.error("usage: sfu-two-guests.mjs <base> <broadcast> <tokenA> <tokenB>");
  process.exit(2);
}

// Runs in the page: joins the studio and keeps what a studio UI would render in window.studio.
async function join({ base, broadcast, token }) {
  const studio = { tiles: {}, tracks: {}, me: null, errors: [], left: [], log: [] };
  window.studio = studio;
  const ws = new WebSocket(
    `${base.replace(/^http/, "ws")}/api/broadcasts/${broadcast}/studio?token=${token}`,
  );
  const pc = new RTCPeerConnection();
  window.pc = pc;
  const send = (m) => ws.send(JSON.stringify(m));
  const sources = {};
  const learn = (tracks) => {
    studio.tracks = {};
    for (const t of tracks) studio.tracks[t.mid] = t;
  };
  pc.ontrack = (e) => {
    const info = studio.tracks[e.transceiver.mid];
    if (!info) return;
    const tile = (studio.tiles[info.participant] ||= {});
    tile[info.source] = e.transceiver.mid;
  };
  const offer = async () => {
    const o = await pc.createOffer();
    await pc.setLocalDescription(o);
    for (const t of pc.getTransceivers()) {
      if (t.sender.track && t.mid !== null && !sources[t.mid]) {
        sources[t.mid] = t.sender.track.__source;
      }
    }
    send({ type: "offer", sdp: o.sdp, sources });
  };
  // Messages are handled one at a time, in order: an offer must not be looked at while the
  // answer before it is still being applied.
  let queue = Promise.resolve();
  ws.onmessage = (ev) => {
    queue = queue.then(() => handle(JSON.parse(ev.data))).catch((e) => studio.errors.push(String(e)));
  };
  const handle = async (m) => {
    studio.log.push(m.type);
    if (m.type === "joined") studio.me = m.participant;
    if (m.type === "answer") {
      learn(m.tracks);
      await pc.setRemoteDescription({ type: "answer", sdp: m.sdp });
    }
    if (m.type === "offer") {
      // We are the impolite side: the SFU redoes its offer after answering ours.
      if (pc.signalingState !== "stable") return;
      learn(m.tracks);
      await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
      const a = await pc.createAnswer();
      await pc.setLocalDescription(a);
      send({ type: "answer", sdp: a.sdp });
      // Tracks the SFU stopped are tiles that go away.
      const live = new Set(Object.values(studio.tracks).map((t) => t.participant));
      for (const p of Object.keys(studio.tiles)) if (!live.has(p)) delete studio.tiles[p];
    }
    if (m.type === "participantLeft") {
      studio.left.push(m.participant);
      delete studio.tiles[m.participant];
    }
    if (m.type === "error") studio.errors.push(m);
  };
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = () => fail(new Error("the studio socket failed"));
  });
  const media = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: 640, height: 360 },
  });
  for (const track of media.getTracks()) {
    track.__source = track.kind === "audio" ? "microphone" : "camera";
    pc.addTransceiver(track, { direction: "sendonly" });
  }
  await offer();
  // A screen share is a second video track; a canvas stands in for the screen here.
  window.shareScreen = async () => {
    const canvas = document.createElement("canvas");
    canvas.width = 640;
    canvas.height = 360;
    const g = canvas.getContext("2d");
    let n = 0;
    setInterval(() => {
      g.fillStyle = `hsl(${n++ % 360} 70% 50%)`;
      g.fillRect(0, 0, 640, 360);
    }, 33);
    const track = canvas.captureStream(30).getVideoTracks()[0];
    track.__source = "screen";
    pc.addTransceiver(track, { direction: "sendonly" });
    await offer();
  };
  window.leave = () => {
    send({ type: "leave" });
    pc.close();
    ws.close();
  };
}

// Inbound counters per mid, from getStats.
async function inbound(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const s of (await window.pc.getStats()).values()) {
      if (s.type === "inbound-rtp" && s.mid !== undefined) {
        out[s.mid] = { bytes: s.bytesReceived || 0, frames: s.framesDecoded || 0 };
      }
    }
    const pc = window.pc;
    return {
      out,
      tiles: window.studio.tiles,
      me: window.studio.me,
      errors: window.studio.errors,
      state: [pc.connectionState, pc.iceConnectionState, pc.signalingState].join("/"),
      log: window.studio.log.join(","),
    };
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits until `page` receives `sources` of `from`, each rising between two samples.
async function expectReceiving(page, from, sourcesWanted, what) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const a = await inbound(page);
    await sleep(1000);
    const b = await inbound(page);
    const tile = b.tiles[from] || {};
    const rising = sourcesWanted.every((src) => {
      const mid = tile[src];
      if (mid === undefined || !a.out[mid] || !b.out[mid]) return false;
      const grew = b.out[mid].bytes > a.out[mid].bytes;
      const decoded = src === "microphone" || b.out[mid].frames > a.out[mid].frames;
      return grew && decoded;
    });
    if (rising) return b;
    if (Date.now() > deadline) {
      throw new Error(`${what}: ${JSON.stringify({ tile, before: a.out, after: b.out, errors: b.errors, state: b.state, log: b.log })}`);
    }
  }
}

const browser = await launch();
const seen = {};
try {
  const pages = [];
  for (const token of [tokenA, tokenB]) {
    const page = await (await browser.newContext()).newPage();
    // Any page of the API's origin: localhost is a secure context, so getUserMedia works.
    await page.goto(`${base}/api/status`);
    await page.evaluate(join, { base, broadcast, token });
    pages.push(page);
  }
  const [a, b] = pages;
  const deadline = Date.now() + 10_000;
  while (!(await inbound(a)).me || !(await inbound(b)).me) {
    if (Date.now() > deadline) throw new Error("not joined");
    await sleep(100);
  }
  const idA = (await inbound(a)).me;
  const idB = (await inbound(b)).me;
  await expectReceiving(a, idB, ["microphone", "camera"], "A receives B");
  const bSees = await expectReceiving(b, idA, ["microphone", "camera"], "B receives A");
  seen.audioAndVideo = Object.keys(bSees.tiles[idA]).sort();

  await a.evaluate(() => window.shareScreen());
  const withScreen = await expectReceiving(b, idA, ["camera", "screen"], "B receives A's screen");
  seen.screenShare = Object.keys(withScreen.tiles[idA]).sort();

  await a.evaluate(() => window.leave());
  const gone = Date.now() + 10_000;
  for (;;) {
    const s = await inbound(b);
    if (!s.tiles[idA]) {
      seen.afterLeave = Object.keys(s.tiles);
      break;
    }
    if (Date.now() > gone) throw new Error(`A's tiles stayed: ${JSON.stringify(s.tiles)}`);
    await sleep(200);
  }
  console.log(JSON.stringify({ ok: true, ...seen }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
