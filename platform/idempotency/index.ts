export { createRequestIds, requestIdMigrations, type IdentifiedCall, type RequestIds, type ResponseCodec } from "./request-ids.js";
