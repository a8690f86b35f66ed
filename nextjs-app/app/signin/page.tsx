import { sameSitePath } from "@/lib/same-site";
import { currentUser } from "@/lib/session";
import { signInAction, signOutAction } from "./actions";

export const dynamic = "force-dynamic";

export default async function SignInPage({
  searchParams,
}: {
  searchParams: Promise<{ next?: string | string[] }>;
}) {
  const user = await currentUser();
  const next = sameSitePath((await searchParams).next);
  if (user) {
    return (
      <>
        <h1>Signed in</h1>
        <p>
          You are <strong id="user-name">{user.name}</strong>.
        </p>
        <form action={signOutAction}>
          <button type="submit">Sign out</button>
        </form>
      </>
    );
  }
  return (
    <>
      <h1>Sign in</h1>
      <p className="muted">A name is all it takes: it is kept in a signed cookie.</p>
      <form action={signInAction}>
        <input type="hidden" name="next" value={next} />
        <input name="name" placeholder="Your name" required maxLength={40} autoFocus />{" "}
        <button type="submit">Sign in</button>
      </form>
    </>
  );
}
