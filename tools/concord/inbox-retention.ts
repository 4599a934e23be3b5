/**
 * How long the services' inboxes remember the events they handled, as far
 * as a tool can know it: a replay or a redelivery of an event older than
 * that may take effect again in a consumer that handled it and forgot so.
 */
import { platformSettings } from "../../platform/runtime/index.js";
import { readStartedServices } from "../started-services.js";

/** The inboxes' retention a command goes by, and where it was read, as its messages name it. */
export interface InboxRetention {
  readonly ms: number;
  /** As `2d, from INBOX_RETENTION`: the value as given and its source. */
  readonly said: string;
}

const setting = platformSettings("concord").INBOX_RETENTION;

/**
 * The retention `given` (--inbox-retention), else the INBOX_RETENTION set
 * here (what the services read, if this shell started them), else the one
 * the `npm start` running on `dataDir` gave its services, else the
 * services' default. A value the services would refuse throws, naming where
 * it came from.
 */
export function inboxRetentionOf(given: string | undefined, dataDir: string, env: NodeJS.ProcessEnv = process.env): InboxRetention {
  const read = (raw: string, from: string): InboxRetention => {
    try {
      return { ms: setting.parse(raw), said: `${raw}, ${from}` };
    } catch (err) {
      throw new Error(`${from}: ${JSON.stringify(raw)} is no inbox retention: ${(err as Error).message}`, { cause: err });
    }
  };
  if (given !== undefined) return read(given, "from --inbox-retention");
  if (env.INBOX_RETENTION) return read(env.INBOX_RETENTION, "from INBOX_RETENTION");
  const started = readStartedServices(dataDir)?.inboxRetention;
  if (started !== undefined) return read(started, `as the \`npm start\` running on ${dataDir} gave the services`);
  return read(setting.default, "the services' default");
}
