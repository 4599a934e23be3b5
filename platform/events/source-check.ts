import { eventHeaders } from "./cloud-events.js";
import { headerValue, UnprocessableEventError, type DeliveryMiddleware } from "./delivery.js";

/**
 * Refuses an event whose `ce-source` is not the service that owns its
 * stream: only that service publishes there, so anything else was forged or
 * misrouted. Unprocessable (the same message never gets a better source):
 * it goes to the dead letter stream at once, with the reason.
 */
export function sourceCheck(expectedSource: string): DeliveryMiddleware {
  return (next) => async (delivery, tx) => {
    const source = headerValue(delivery.headers, eventHeaders.source);
    if (source !== expectedSource) {
      throw new UnprocessableEventError(
        `stream ${delivery.stream} holds events of ${JSON.stringify(expectedSource)} only, but the message's ce-source is ${source === undefined ? "missing" : JSON.stringify(source)}`,
      );
    }
    return next(delivery, tx);
  };
}
