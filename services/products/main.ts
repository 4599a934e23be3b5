import { hostSettingsOf, instanceOf, runService } from "../../platform/runtime/index.js";
import { startProducts } from "./app.js";
import { productSettings } from "./config.js";

await runService({
  name: "products",
  summary: "the product service: catalogue and stock (gRPC shop.products.v1.ProductService)",
  settings: productSettings,
  instance: (config) => instanceOf("PRODUCTS", config),
  start: (config, logger, signal) => startProducts({ ...hostSettingsOf("PRODUCTS", config), logger, signal }),
});
