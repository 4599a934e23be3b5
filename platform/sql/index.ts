export { openDatabase, type Database, type DatabaseOptions, type Migration } from "./database.js";
