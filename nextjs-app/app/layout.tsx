import type { Metadata } from "next";
import Link from "next/link";
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
          </nav>
        </header>
        <main>{children}</main>
      </body>
    </html>
  );
}
