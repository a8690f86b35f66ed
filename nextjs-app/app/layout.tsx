import type { Metadata } from "next";
import Link from "next/link";
import { RealtimeProvider } from "@/lib/realtime";
import "./globals.css";

export const metadata: Metadata = {
  title: "Next.js behind the gateway",
  description: "A Next.js App Router app served with its WebSockets on one port.",
};

export default function RootLayout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en">
      <body>
        <header>
          <strong>gateway demo</strong>
          <nav>
            <Link href="/">Home</Link>
            <Link href="/about">About</Link>
            <Link href="/time">Server time</Link>
            <Link href="/stream">Streaming</Link>
            <Link href="/notes">Notes</Link>
            <Link href="/live">Live</Link>
            <Link href="/chat">Chat</Link>
            <Link href="/signin">Sign in</Link>
          </nav>
        </header>
        {/* One WebSocket per tab, kept across client-side navigation. */}
        <RealtimeProvider>
          <main>{children}</main>
        </RealtimeProvider>
      </body>
    </html>
  );
}
