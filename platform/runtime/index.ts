export { runService, type RunningService, type RunServiceOptions } from "./run-service.js";
