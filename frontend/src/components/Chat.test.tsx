import { describe, expect, it } from "vitest";
import { render, screen } from "@testing-library/react";
import { Chat } from "./Chat";
import { useRealtime } from "../stores/realtime";

describe("the chat panel", () => {
  it("shows messages as text, never as markup, and disables sending while disconnected", () => {
    useRealtime.setState({
      connection: "reconnecting",
      messages: [{ id: "1", broadcastId: "b", channel: "public", userId: "u", displayName: "Eve", text: "<img src=x onerror=alert(1)>", createdAt: "" }],
    });
    const { container } = render(<Chat title="Live chat" canSend />);
    expect(screen.getByText("<img src=x onerror=alert(1)>")).toBeTruthy();
    expect(container.querySelector("img")).toBeNull();
    expect(screen.getByRole("button", { name: "Send" }).hasAttribute("disabled")).toBe(true);
    expect(screen.getByText("reconnecting…")).toBeTruthy();
  });
});
