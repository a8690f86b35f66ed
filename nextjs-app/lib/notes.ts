// A process-local list of notes for the Server Action demo (one `next start` process).
const store = ((globalThis as Record<string, unknown>).__notes ??= []) as string[];

export function listNotes(): readonly string[] {
  return store;
}

export function appendNote(text: string): void {
  store.push(text.slice(0, 200));
}
