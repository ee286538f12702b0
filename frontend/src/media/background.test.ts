import { describe, expect, it } from "vitest";
import { cover } from "./background";

describe("a background picture", () => {
  it("covers the frame, cropped and centred, whatever its shape", () => {
    // Square picture, wide frame: scaled to the width, cropped top and bottom.
    expect(cover(100, 100, 1280, 720)).toEqual([0, -280, 1280, 1280]);
    // Tall frame: scaled to the height, cropped at the sides.
    expect(cover(1920, 1080, 720, 1280)).toEqual([-777.7777777777778, 0, 2275.5555555555557, 1280]);
    // A 1x1 picture simply fills the frame.
    expect(cover(1, 1, 640, 360)).toEqual([0, -140, 640, 640]);
  });
});
