import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { SceneControls } from "./SceneControls";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

const reply = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status });

describe("scene controls", () => {
  it("are off while the show is not running, except the layout", () => {
    render(<SceneControls broadcastId="b" layout="grid" running={false} setLayout={async () => {}} />);
    expect(screen.getByRole("button", { name: "Show banner" }).hasAttribute("disabled")).toBe(true);
    expect(screen.getByRole("button", { name: "spotlight" }).hasAttribute("disabled")).toBe(false);
    expect(screen.getByRole("button", { name: "grid" }).getAttribute("aria-pressed")).toBe("true");
  });

  it("send a banner and show what the compositor says is on screen, or its refusal", async () => {
    const fetch = vi
      .fn()
      .mockResolvedValueOnce(reply({ banner: null }))
      .mockResolvedValueOnce(reply({ banner: { text: "Hello", style: "lower-third" } }))
      .mockResolvedValueOnce(reply({ error: { code: "validation_failed", message: "bad colour" } }, 422));
    vi.stubGlobal("fetch", fetch);
    render(<SceneControls broadcastId="b" layout="grid" running setLayout={async () => {}} />);
    fireEvent.change(screen.getByLabelText("Banner text"), { target: { value: "Hello" } });
    fireEvent.click(screen.getByRole("radio", { name: "Lower third" }));
    fireEvent.click(screen.getByRole("button", { name: "Show banner" }));
    await waitFor(() => expect(screen.getByTestId("on-screen-banner").textContent).toBe("On screen: Hello"));
    const [url, init] = fetch.mock.calls[1];
    expect(url).toBe("/api/broadcasts/b/scene");
    expect(JSON.parse(init.body)).toEqual({ type: "show-banner", banner: { text: "Hello", style: "lower-third" } });
    fireEvent.click(screen.getByRole("button", { name: "Apply colour" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe("bad colour"));
  });

  it("upload a brand picture, then put it into the brand keeping the colour", async () => {
    const fetch = vi
      .fn()
      .mockResolvedValueOnce(reply({ brand: { color: "#112233" } }))
      .mockResolvedValueOnce(reply({ id: "up-1" }, 201))
      .mockResolvedValueOnce(reply({ brand: { color: "#112233", logo: "up-1.png" } }));
    vi.stubGlobal("fetch", fetch);
    render(<SceneControls broadcastId="b" layout="grid" running setLayout={async () => {}} />);
    await waitFor(() => expect(fetch).toHaveBeenCalledTimes(1));
    const file = new File([new Uint8Array([0x89, 0x50, 0x4e, 0x47])], "logo.png", { type: "image/png" });
    fireEvent.change(screen.getByLabelText("Logo (PNG or JPEG)"), { target: { files: [file] } });
    await waitFor(() => expect(screen.getByRole("button", { name: "Remove logo" })).toBeTruthy());
    const [upUrl, upInit] = fetch.mock.calls[1];
    expect(upUrl).toBe("/api/upload?kind=logo");
    expect(upInit.body).toBeInstanceOf(FormData);
    expect(upInit.headers["Content-Type"]).toBeUndefined();
    expect(JSON.parse(fetch.mock.calls[2][1].body)).toEqual({ type: "set-brand", brand: { color: "#112233", logo: "up-1" } });
  });
});
