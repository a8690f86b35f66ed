// Client-side entry point: import from "@/lib/realtime" in client components.
// Server code imports "@/lib/realtime/server" (the gateway's server API) and
// "@/lib/realtime/route-hooks" (route handlers the gateway calls); both are server-only.
export { RealtimeProvider, type RealtimeProviderProps } from "./RealtimeProvider";
export type { ConnectionState, ConnectionStatus, RealtimeConnection } from "./connection";
export {
  DEFAULT_TRANSPORTS,
  EMULATION_PATH,
  resolveEndpoints,
  type GatewayTransport,
  type TransportConfig,
} from "./transports";
export {
  useConnectionState,
  usePresence,
  useRealtime,
  useRealtimeConnection,
  useSubscription,
  type Gap,
  type Member,
  type Publication,
  type SubscriptionOptions,
  type SubscriptionStatus,
} from "./use-realtime";
