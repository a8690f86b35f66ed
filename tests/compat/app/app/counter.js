"use client";

import { useState } from "react";

// A client component: the page loads its chunk from /_next/static.
export default function Counter() {
  const [count, setCount] = useState(0);
  return <button onClick={() => setCount(count + 1)}>clicked {count}</button>;
}
