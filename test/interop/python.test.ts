// The Python SDK (gen/python) against the running TypeScript services: see sdk-suite.ts.
import { pythonProgram } from "./programs.js";
import { describeInterop } from "./sdk-suite.js";

describeInterop("python", async () => pythonProgram());
