"use client";

import { useConnectionState } from "@/lib/realtime";

const LABELS = {
  connected: "connected",
  connecting: "connecting",
  disconnected: "offline",
} as const;

export function ConnectionBadge() {
  const { state, reconnecting, transport } = useConnectionState();
  const label = reconnecting ? "reconnecting" : LABELS[state];
  // Only a fallback is worth a word: it means this network blocks WebSockets.
  const fallback = transport && transport !== "websocket" ? transport : undefined;
  return (
    <span
      className={`badge badge-${label}`}
      id="connection-badge"
      data-state={label}
      data-transport={transport ?? undefined}
    >
      {label}
      {fallback && <small className="badge-transport"> via {fallback}</small>}
    </span>
  );
}
