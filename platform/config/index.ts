export * from "./env.js";
export * from "./setting-file.js";
