"use client";

import { useConnectionState } from "@/lib/realtime";

const LABELS = {
  connected: "connected",
  connecting: "connecting",
  disconnected: "offline",
} as const;

export function ConnectionBadge() {
  const { state, reconnecting } = useConnectionState();
  const label = reconnecting ? "reconnecting" : LABELS[state];
  return (
    <span className={`badge badge-${label}`} id="connection-badge" data-state={label}>
      {label}
    </span>
  );
}
