export { isUuid, uuidv7 } from "./uuid-v7.js";
export { randomBytesFromPool } from "./random-pool.js";
