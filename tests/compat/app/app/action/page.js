import { redirect } from "next/navigation";

export const dynamic = "force-dynamic";

async function say(formData) {
  "use server";
  redirect(`/action?said=${encodeURIComponent(String(formData.get("text") ?? ""))}`);
}

// A Server Action behind a form that works without JavaScript (progressive enhancement):
// the page renders the action's id as a hidden field, and a plain form POST runs it.
export default async function Action({ searchParams }) {
  const { said } = await searchParams; // a Promise from Next 15 on, an object in 14
  return (
    <main>
      <p id="said">{said ? `said: ${said}` : "nothing said"}</p>
      <form action={say}>
        <input name="text" />
        <button type="submit">say</button>
      </form>
    </main>
  );
}
