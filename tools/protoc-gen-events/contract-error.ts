/**
 * Contract problems found while reading the options. They are collected, so
 * one run of `buf generate` reports every broken contract, and then thrown
 * together as one ContractError naming each file and message or service.
 */
import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { locateFileOption, locateMessage, locateService } from "../contracts/source-locations.js";

/** The contracts break a rule of the Concord options; `problems` lists each one. */
export class ContractError extends Error {
  override name = "ContractError";
  constructor(readonly problems: readonly string[]) {
    super(`${problems.length} contract problem${problems.length === 1 ? "" : "s"}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/**
 * Collects problems, each prefixed with where it is in the contracts. A
 * file's problems are its `(concord.v1.stream)` option's, located by the
 * option's extension number, `streamNumber`.
 */
export class ContractProblems {
  private readonly list: string[] = [];

  constructor(private readonly streamNumber?: number) {}

  /** Records a problem with `desc`, for example a message with a bad subject. */
  add(desc: DescFile | DescMessage | DescService, problem: string): void {
    this.list.push(`${where(desc, this.streamNumber)}: ${problem}`);
  }

  /** How many problems have been recorded so far. */
  get count(): number {
    return this.list.length;
  }

  /** Throws a ContractError listing every problem recorded, if any. */
  throwIfAny(): void {
    if (this.list.length > 0) throw new ContractError(this.list);
  }
}

/**
 * `shop/orders/v1/order_events.proto:26:1: message shop.orders.v1.OrderPlaced`,
 * or `shop/orders/v1/order_events.proto:13:1` for a file's stream option: the
 * line and column of the declaration as buf prints them (1:1 without source
 * info), so an editor opens the place.
 */
function where(desc: DescFile | DescMessage | DescService, streamNumber: number | undefined): string {
  switch (desc.kind) {
    case "file":
      return streamNumber === undefined ? `${desc.name}.proto` : locateFileOption(desc, streamNumber);
    case "message":
      return `${locateMessage(desc)}: message ${desc.typeName}`;
    case "service":
      return `${locateService(desc)}: service ${desc.typeName}`;
  }
}
