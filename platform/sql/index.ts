export { openDatabase, type Database, type DatabaseOptions, type Migration } from "./database.js";
export { startRetention, type Retention, type RetentionOptions } from "./retention.js";
