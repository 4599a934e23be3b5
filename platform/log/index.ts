export { createLogger, infoLineWriter, type Logger, type LoggerOptions } from "./logger.js";
export { LineWindow } from "./line-window.js";
