import { addressSettings, platformSettings } from "../../platform/runtime/index.js";

/** The product service's environment: only what every service reads. */
export const productSettings = {
  ...addressSettings("PRODUCTS", { listen: "127.0.0.1:50051", database: ".data/products.db" }),
  ...platformSettings("products"),
};
