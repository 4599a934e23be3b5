/** The nats-server the project pins (module, version with its "v", and where setup puts it). */
export declare const pinnedNatsServer: { readonly module: string; readonly version: string; readonly path: string };
/** "2.9.10" from "nats-server: v2.9.10"; undefined when the output says no version. */
export declare function parseNatsServerVersion(output: string | undefined): string | undefined;
/** What a server of `version` lacks next to the pinned one, one phrase each; empty for the pinned version or newer. */
export declare function natsServerLacks(version: string): string[];
/** Whether a server of `version` takes `sync_interval` in its jetstream block (2.10 and later). */
export declare function takesSyncInterval(version: string): boolean;
/** The version a nats-server binary reports ("2.15.2"), or undefined when it does not run. */
export declare function natsServerVersionOf(binary: string): string | undefined;
/** A nats-server found: the pinned one, or a fallback with a warning saying what it lacks. */
export interface FoundNatsServer {
  readonly path: string;
  readonly version: string;
  readonly pinned: boolean;
  readonly warning: string | undefined;
  /** Whether its config takes `sync_interval` (2.10 and later); write `sync_interval: always` only then. */
  readonly syncInterval: boolean;
}
/** The pinned nats-server in .tools/bin, else one on PATH or in the sbin directories with a warning; undefined when there is none. */
export declare function findNatsServer(pinnedPath?: string): FoundNatsServer | undefined;
