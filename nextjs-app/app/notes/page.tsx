import { listNotes } from "@/lib/notes";
import { addNote } from "./actions";

export const dynamic = "force-dynamic";

export default function NotesPage() {
  const notes = listNotes();
  return (
    <>
      <h1>Notes</h1>
      <p className="muted">A form posted to a Server Action, through the gateway.</p>
      <form action={addNote}>
        <input name="text" placeholder="Write a note" required maxLength={200} />{" "}
        <button type="submit">Add</button>
      </form>
      <ul id="notes">
        {notes.map((note, i) => (
          <li key={i}>{note}</li>
        ))}
      </ul>
    </>
  );
}
