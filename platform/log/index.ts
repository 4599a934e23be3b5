export { createLogger, infoLineWriter, processName, type Logger, type LoggerOptions } from "./logger.js";
export { LineWindow } from "./line-window.js";
