import Counter from "./counter";

// Prerendered at build time: Next answers it with an ETag (and 304 to If-None-Match).
export default function Home() {
  return (
    <main>
      <h1>compat home</h1>
      <Counter />
    </main>
  );
}
