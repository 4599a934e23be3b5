import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/support/shop.js";
import { repoRoot } from "../repo-root.js";
import { breakingAdvice, breakingChanges } from "./checks.js";
import { contractEditor } from "../../test/support/edited-contracts.js";
import { incompatibleEventChanges, newEventAdvice, streamEditAdvice } from "./event-changes.js";

const orderEvents = "shop/orders/v1/order_events.proto";
const productService = "shop/products/v1/product_service.proto";
const productEvents = "shop/products/v1/product_events.proto";

describe("incompatibleEventChanges", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const { edited, filesOf } = contractEditor(dir.path);
  const original = filesOf(join(repoRoot, "proto"));

  it("refuses, in npm run breaking, an event given another subject, which buf lets through, naming where and what to do instead", () => {
    const moved = edited({ [orderEvents]: (t) => t.replace("shop.orders.v1.order.{order_id}.placed", "shop.orders.v1.order.{order_id}.created") });
    const result = breakingChanges(moved, join(repoRoot, "proto"));
    expect(result.ok).toBe(false);
    expect(result.output).toBe(
      `${join(moved, orderEvents)}:26:1:Event "shop.orders.v1.OrderPlaced" changed its subject from "shop.orders.v1.order.{order_id}.placed" to "shop.orders.v1.order.{order_id}.created"; its consumers filter on "shop.orders.v1.order.*.placed" and would receive nothing. ${newEventAdvice}\n\n${breakingAdvice}`,
    );
  });

  it("refuses an event renamed, no longer an event, or moved to another stream", () => {
    const renamed = edited({
      [orderEvents]: (t) => t.replace("message OrderPlaced {", "message OrderSubmitted {"),
      [productService]: (t) => t.replace('event: "shop.orders.v1.OrderPlaced"', 'event: "shop.orders.v1.OrderSubmitted"'),
    });
    // Where the revision compared against declared it, saying so: that line of the work tree's file is another.
    expect(incompatibleEventChanges(filesOf(renamed), original, [], "HEAD~1")).toEqual([
      `${orderEvents}:26:1:Event "shop.orders.v1.OrderPlaced" (declared there in HEAD~1) was removed or renamed (consumers take events by this name, their ce-type); its consumers would receive nothing. ${newEventAdvice}`,
    ]);
    const unmarked = edited({
      [orderEvents]: (t) => t.replace('  option (concord.v1.event) = {subject: "shop.orders.v1.order.{order_id}.placed"};\n', ""),
      [productService]: (t) => t.replace(/  \/\/ Reserves stock for each placed order\.\n  option \(concord\.v1\.subscribe\) = \{[^}]*\};\n/, ""),
    });
    expect(incompatibleEventChanges(filesOf(unmarked), original)).toEqual([
      `${orderEvents}:26:1:Event "shop.orders.v1.OrderPlaced" is no longer an event (its (concord.v1.event) option is gone); its consumers would receive nothing. ${newEventAdvice}`,
    ]);
    const restreamed = edited({ [orderEvents]: (t) => t.replace('name: "SHOP_ORDERS"', 'name: "SHOP_ORDERS_2"') });
    const found = incompatibleEventChanges(filesOf(restreamed), original);
    expect(found).toHaveLength(6);
    expect(found).toContain(`${orderEvents}:26:1:Event "shop.orders.v1.OrderPlaced" moved from stream SHOP_ORDERS to SHOP_ORDERS_2; its consumers read SHOP_ORDERS. ${newEventAdvice}`);
  });

  it("refuses a subscription's durable renamed, which would take the stream's events again from its oldest", () => {
    const renamed = edited({ [productService]: (t) => t.replace('durable: "products-order-placed"', 'durable: "products-placed"') });
    expect(incompatibleEventChanges(filesOf(renamed), original)).toEqual([
      `${productService}:15:1:Service "shop.products.v1.ProductService" takes "shop.orders.v1.OrderPlaced" through durable products-placed, no longer products-order-placed; a new durable starts at the stream's oldest event and its handler takes each again, while products-order-placed stays on the server. Instead: keep the name products-order-placed.`,
    ]);
    const moved = edited({ [productService]: (t) => t.replace(/  \/\/ Reserves stock for each placed order\.\n  option \(concord\.v1\.subscribe\) = \{[^}]*\};\n/, "") });
    expect(incompatibleEventChanges(filesOf(moved), original), "a subscription dropped is the service's own affair").toEqual([]);
  });

  it("refuses a durable given another event, whose filter subject the server keeps, so the new build would not start", () => {
    const reused = edited({ [productService]: (t) => t.replace('event: "shop.orders.v1.OrderCancelled"\n    durable: "products-order-cancelled"', 'event: "shop.orders.v1.OrderRejected"\n    durable: "products-order-cancelled"') });
    expect(incompatibleEventChanges(filesOf(reused), original)).toEqual([
      `${productService}:15:1:Service "shop.products.v1.ProductService" takes "shop.orders.v1.OrderRejected" through durable products-order-cancelled, which took "shop.orders.v1.OrderCancelled"; the server keeps its filter "shop.orders.v1.order.*.cancelled", and the new build refuses to start with a durable that filters on another subject, while the running build still reads "shop.orders.v1.OrderCancelled" through it. Instead: take "shop.orders.v1.OrderRejected" through a durable of a new name.`,
    ]);
    expect(incompatibleEventChanges(filesOf(reused), original, [productService])).toEqual([]);
  });

  it("refuses a stream made to keep less (subjects dropped, a shorter max age or duplicate window) or given another storage, saying what each does; passes one made to keep more, and its description", () => {
    const orders = (edit: (t: string) => string) => incompatibleEventChanges(filesOf(edited({ [orderEvents]: edit })), original);
    const kept = "provisioning never narrows a stream, so it keeps what it kept (every service accepts a stream that keeps more than its contract) until the operator narrows it by hand;";
    expect(orders((t) => t.replace("max_age: {seconds: 2592000}", "max_age: {seconds: 3600}"))).toEqual([
      `${orderEvents}:14:1:Stream SHOP_ORDERS: max_age shortened from 30d to 1h; ${kept} once it is, nats-server deletes at once every event older than 1h, which a consumer further behind, and a new durable (which starts at the stream's oldest event), never receive. ${streamEditAdvice}.`,
    ]);
    // Provisioning widens the stream, and the running build accepts one that keeps more.
    expect(orders((t) => t.replace("max_age: {seconds: 2592000}", "max_age: {seconds: 7776000}"))).toEqual([]);
    expect(orders((t) => t.replace("  max_age: {seconds: 2592000}\n", ""))).toEqual([]);
    expect(orders((t) => t.replace("duplicate_window: {seconds: 120}", "duplicate_window: {seconds: 300}"))).toEqual([]);
    expect(orders((t) => t.replace("replicas: 3", "replicas: 3\n  storage: STORAGE_MEMORY"))).toEqual([
      `${orderEvents}:14:1:Stream SHOP_ORDERS: storage changed from file to memory; the new build's services refuse to start (exit 2) against the stream, and nats-server refuses to change a stream's storage: the stream would have to be deleted and made again, losing every event it holds. Instead: keep the storage; events kept otherwise need a stream of their own: declare them in a new file with its stream, beside these (README.md, Breaking changes).`,
    ]);
    expect(orders((t) => t.replace("duplicate_window: {seconds: 120}", "duplicate_window: {seconds: 60}"))).toEqual([
      expect.stringContaining(`Stream SHOP_ORDERS: duplicate_window shortened from 2m to 1m; ${kept} once it is, an event published again later than that`),
    ]);
    const subjects = (list: string, before = original) => incompatibleEventChanges(filesOf(edited({ [productEvents]: (t) => t.replace('subjects: ["shop.products.v1.>"]', `subjects: [${list}]`) })), before);
    // Subjects are judged by what they match: shop.products.v1.> keeps all its two subjects within it do, and more.
    expect(subjects('"shop.products.v1.product.>", "shop.products.v1.reservation.>"')).toEqual([
      expect.stringContaining(
        `Stream SHOP_PRODUCTS: subjects changed from shop.products.v1.> to shop.products.v1.product.>, shop.products.v1.reservation.>; ${kept} once it is, an event published on shop.products.v1.> outside shop.products.v1.product.>, shop.products.v1.reservation.> is stored nowhere`,
      ),
    ]);
    expect(subjects('"shop.products.v1.>", "shop.products.v2.>"')).toEqual([]);
    expect(subjects('"shop.products.>"')).toEqual([]);
    const twoSubjects = filesOf(edited({ [productEvents]: (t) => t.replace('subjects: ["shop.products.v1.>"]', 'subjects: ["shop.products.v1.>", "shop.products.v2.>"]') }));
    expect(incompatibleEventChanges(filesOf(edited({})), twoSubjects)).toEqual([
      expect.stringContaining(`Stream SHOP_PRODUCTS: subjects changed from shop.products.v1.>, shop.products.v2.> to shop.products.v1.>; ${kept} once it is, an event published on shop.products.v2.> is stored nowhere`),
    ]);
    expect(subjects('"shop.products.v1.>", "shop.products.v3.>"', twoSubjects)).toEqual([
      `${productEvents}:13:1:Stream SHOP_PRODUCTS: subjects changed from shop.products.v1.>, shop.products.v2.> to shop.products.v1.>, shop.products.v3.>; the new build's services refuse to start (exit 2) against the stream, which keeps subjects the contract lacks and lacks some it has, and npx concord streams provision refuses to change it; Instead: add the new subjects in one release (provisioning adds them to the stream, which loses nothing) and drop the old ones in a later one.`,
    ]);
    // The description follows the comment.
    expect(orders((t) => t.replace("// Events of the order service.", "// Events of the order service, described anew."))).toEqual([]);
    const shorter = filesOf(edited({ [orderEvents]: (t) => t.replace("max_age: {seconds: 2592000}", "max_age: {seconds: 3600}") }));
    expect(incompatibleEventChanges(shorter, original, [orderEvents])).toEqual([]);
  });

  it("refuses a stream's replicas lowered, saying what durability that costs; passes them raised", () => {
    const replicas = (n: number) => incompatibleEventChanges(filesOf(edited({ [orderEvents]: (t) => t.replace("replicas: 3", `replicas: ${n}`) })), original);
    expect(replicas(1)).toEqual([
      `${orderEvents}:14:1:Stream SHOP_ORDERS: replicas lowered from 3 to 1; a service never lowers a stream's replicas, so the stream keeps 3 until the operator next provisions the streams ` +
        "(npx concord streams provision, as npm start does), which moves it down to 1: then an acknowledged event is on 1 server where it was on 2, " +
        "and the stream stays up through the loss of no server where it did through 1 (README.md, Durability). " +
        "Instead: keep the replicas; where fewer are meant, ship the change in a commit of its own that lists its file under breaking: ignore (README.md, Breaking changes).",
    ]);
    // Both keep an event on 2 servers before its ack; 2 stop with one lost.
    expect(replicas(2)).toEqual([expect.stringContaining("moves it down to 2: then the stream stays up through the loss of no server where it did through 1 (README.md, Durability)")]);
    expect(replicas(5)).toEqual([]);
    expect(incompatibleEventChanges(original, filesOf(edited({ [orderEvents]: (t) => t.replace("replicas: 3", "replicas: 5") })))).toEqual([
      expect.stringContaining("moves it down to 3: then an acknowledged event is on 2 servers where it was on 3, and the stream stays up through the loss of 1 server where it did through 2"),
    ]);
    expect(incompatibleEventChanges(filesOf(edited({ [orderEvents]: (t) => t.replace("replicas: 3", "replicas: 1") })), original, [orderEvents])).toEqual([]);
  });

  it("names, in npm run breaking, the file of a contract problem as it names a finding's, openable from where the command runs", () => {
    const reused = edited({ [productService]: (t) => t.replace('durable: "products-order-cancelled"', 'durable: "products-order-placed"') });
    expect(() => breakingChanges(reused, join(repoRoot, "proto"))).toThrow(`1 contract problem:\n  - ${join(reused, productService)}:15:1: service shop.products.v1.ProductService: (concord.v1.subscribe) durable "products-order-placed"`);
  });

  it("lets through what the running consumers still take: a new field, a new event; and skips the paths buf.yaml ignores", () => {
    const compatible = edited({
      [orderEvents]: (t) =>
        t.replace("  int64 lines_version = 5 [", "  // A note.\n  string note = 6;\n  int64 lines_version = 5 [") +
        '\n// Test only.\nmessage OrderNoted {\n  option (concord.v1.event) = {subject: "shop.orders.v1.order.{order_id}.noted"};\n  // Id of the order.\n  string order_id = 1;\n}\n',
    });
    expect(incompatibleEventChanges(filesOf(compatible), original)).toEqual([]);
    const moved = edited({ [orderEvents]: (t) => t.replace("shop.orders.v1.order.{order_id}.placed", "shop.orders.v1.order.{order_id}.created") });
    expect(incompatibleEventChanges(filesOf(moved), original, ["shop/orders"])).toEqual([]);
    expect(incompatibleEventChanges(filesOf(moved), original, [orderEvents])).toEqual([]);
    expect(incompatibleEventChanges(filesOf(moved), original, ["shop/order"])).toHaveLength(1);
  });
});
