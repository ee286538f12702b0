import { describe, expect, it } from "vitest";
import { pruneTiles, type Tiles } from "./studio";

const track = (id: string) => ({ id }) as unknown as MediaStreamTrack;

describe("tiles", () => {
  it("keep only tracks the SFU still offers, and drop emptied participants", () => {
    const tiles: Tiles = { ann: { camera: track("a1"), microphone: track("a2"), screen: track("a3") }, bo: { camera: track("b1") } };
    const out = pruneTiles(tiles, [
      { mid: "0", participant: "ann", source: "camera" },
      { mid: "1", participant: "ann", source: "microphone" },
    ]);
    expect(Object.keys(out)).toEqual(["ann"]);
    expect(Object.keys(out.ann)).toEqual(["camera", "microphone"]);
  });
});
