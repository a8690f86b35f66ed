import { Suspense } from "react";

export const dynamic = "force-dynamic";

async function Slow() {
  await new Promise((resolve) => setTimeout(resolve, 1500));
  return <p id="slow">slow part</p>;
}

// The shell goes out at once; the slow part follows in the same response, 1.5 s later.
export default function Stream() {
  return (
    <main>
      <h1>stream shell</h1>
      <Suspense fallback={<p>loading</p>}>
        <Slow />
      </Suspense>
    </main>
  );
}
