// Client-side entry point: import from "@/lib/realtime" in client components.
// Server code (route handlers, Server Actions) imports "@/lib/realtime/server" and
// "@/lib/realtime/hook" instead.
export { RealtimeProvider, type ConnectionState } from "./RealtimeProvider";
export {
  useConnectionState,
  usePresence,
  useRealtime,
  useSubscription,
  type Member,
  type Publication,
} from "./hooks";
