export { startPeriodic, type Periodic, type PeriodicOptions } from "./periodic.js";
