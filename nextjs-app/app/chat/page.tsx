import Link from "next/link";
import { ChatRoom } from "@/components/chat/ChatRoom";
import { currentUser } from "@/lib/session";

export const dynamic = "force-dynamic";

export default async function ChatPage({ searchParams }: { searchParams: Promise<{ room?: string }> }) {
  const user = await currentUser();
  const { room = "lobby" } = await searchParams;
  if (!user) {
    return (
      <>
        <h1>Chat</h1>
        <p>
          <Link href="/signin?next=/chat">Sign in</Link> to chat.
        </p>
      </>
    );
  }
  const safeRoom = /^[a-z0-9-]{1,32}$/.test(room) ? room : "lobby";
  return <ChatRoom room={safeRoom} me={user} />;
}
