import { cleanup } from "@testing-library/react";
import { afterEach } from "vitest";

// Updates come from a real WebSocket, outside act(): let React schedule them as in a browser
// (and keep act's warnings out of the output); the tests wait for what they expect instead.
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;

afterEach(() => cleanup());
