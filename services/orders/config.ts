import { durationAtLeastOrOff, serviceAddress, timerDuration } from "../../platform/config/index.js";
import { addressSettings, platformSettings } from "../../platform/runtime/index.js";

/** The order service's environment: what every service reads, and how it reaches the product service and how long an order may wait for it. */
export const orderSettings = {
  ...addressSettings("ORDERS", { listen: "127.0.0.1:50052", database: ".data/orders.db" }),
  PRODUCTS_ADDRESS: {
    description: "the product service: host:port, the instances' IP host:port (all IPv4 or all IPv6) separated by commas, or dns:///host:port (calls are spread over them)",
    default: "127.0.0.1:50051",
    parse: serviceAddress,
  },
  PRODUCTS_TIMEOUT: { description: "deadline of each call to the product service (1ms to 24d)", default: "2s", parse: timerDuration("1ms") },
  ORDERS_PENDING_TIMEOUT: {
    description: "how long an order may wait PENDING for the product service's answer about its stock before the service cancels it (OrderCancelled); 0 or off: never",
    default: "15m",
    // The product service's consumers retry an OrderPlaced for over a minute (1 s, 5 s, 30 s, 30 s apart) before they give up on it.
    parse: durationAtLeastOrOff("2m", "a shorter one cancels orders whose answer is merely slow, an OrderPlaced the product service is still retrying"),
  },
  ...platformSettings("orders"),
};
