export { createLogger, infoLineWriter, type Logger, type LoggerOptions } from "./logger.js";
