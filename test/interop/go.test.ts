// The Go SDK (gen/go) against the running TypeScript services: see sdk-suite.ts.
import { buildGoProgram } from "./programs.js";
import { describeInterop } from "./sdk-suite.js";

describeInterop("go", buildGoProgram);
