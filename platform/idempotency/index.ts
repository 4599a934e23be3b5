export { createRequestIds, defaultRequestIdRetentionMs, requestIdMigrations, requestIdRetention, type IdentifiedCall, type RequestIds, type ResponseCodec } from "./request-ids.js";
