import Link from "next/link";
import { LiveFeed } from "@/components/LiveFeed";
import { currentUser } from "@/lib/session";
import { postToFeed } from "./actions";

export const dynamic = "force-dynamic";

export default async function LivePage() {
  const user = await currentUser();
  if (!user) {
    return (
      <>
        <h1>Live feed</h1>
        <p>
          <Link href="/signin?next=/live">Sign in</Link> to connect.
        </p>
      </>
    );
  }
  return (
    <>
      <h1>Live feed</h1>
      <p className="muted">
        Your browser is connected to <code>/connection/websocket</code> on this same origin, with
        a token from <code>/api/ws-token</code>. Posts go through a Server Action to the
        gateway&apos;s server API and back to every open page.
      </p>
      <form action={postToFeed}>
        <input name="text" placeholder="Say something" required maxLength={500} />{" "}
        <button type="submit">Post</button>
      </form>
      <LiveFeed channel="feed:demo" />
    </>
  );
}
