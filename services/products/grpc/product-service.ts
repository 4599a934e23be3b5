import { ProductCreatedEvent, ProductUpdatedEvent, StockAdjustedEvent } from "../../../gen/ts/shop/products/v1/product_events_jetstream.js";
import { AdjustStockResponse, CreateProductResponse, Product, ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { StatusError } from "../../../platform/errors/index.js";
import type { Outbox } from "../../../platform/events/index.js";
import { callTransaction, decodePageToken, listPage, pageScope, pageSizeOf, type ServiceImpl } from "../../../platform/grpc/index.js";
import type { RequestIds } from "../../../platform/idempotency/index.js";
import { uuidv7 } from "../../../platform/ids/index.js";
import type { Database } from "../../../platform/sql/index.js";
import { toProductMessage } from "../contract.js";
import { adjustedStock, type EditableField, editProduct, type ProductRecord } from "../domain/product.js";
import type { ProductStore } from "../store/product-store.js";

/** What the product service's gRPC port needs. */
export interface ProductServiceDeps {
  readonly db: Database;
  readonly store: ProductStore;
  /** Where every change's events go, in the change's own transaction. */
  readonly outbox: Outbox;
  /** Request ids of CreateProduct and AdjustStock calls, so a repeated call has no second effect. */
  readonly requestIds: RequestIds;
  readonly now?: () => number;
}

/**
 * ProductService: the contract's methods over the product store. Each change
 * and the event that reports it (ProductCreated, ProductUpdated,
 * StockAdjusted) commit in one transaction.
 */
export function createProductService(deps: ProductServiceDeps): ServiceImpl<typeof ProductServiceService> {
  const { db, store, outbox, requestIds } = deps;
  const now = deps.now ?? Date.now;
  const found = (product: ProductRecord | undefined, id: string): ProductRecord => {
    if (!product) throw StatusError.notFound(`product ${id} does not exist`);
    return product;
  };

  return {
    async createProduct(req, context) {
      const at = now();
      const product: ProductRecord = {
        id: uuidv7(at),
        name: req.name,
        description: req.description,
        priceMinor: req.price!.amountMinor,
        currency: req.price!.currencyCode,
        stock: req.initialStock,
        reserved: 0,
        version: 1,
        stockVersion: 1,
        createdAt: at,
        updatedAt: at,
      };
      return db.transaction((tx) =>
        requestIds.once(tx, context, req.requestId, CreateProductResponse, async () => {
          await store.insert(tx, product);
          const message = toProductMessage(product);
          outbox.add(tx, ProductCreatedEvent, { productId: product.id, product: message }, context);
          return { product: message };
        }),
        callTransaction(context),
      );
    },

    async getProduct(req) {
      return { product: toProductMessage(found(await store.get(db, req.id), req.id)) };
    },

    async batchGetProducts(req) {
      return { products: (await store.getMany(db, req.ids)).map(toProductMessage) };
    },

    async updateProduct(req, context) {
      const mask = (req.updateMask ?? []) as EditableField[];
      return db.transaction(async (tx) => {
        const current = found(await store.getForUpdate(tx, req.id), req.id);
        const edited = editProduct(current, req.expectedVersion, mask, {
          name: req.name,
          description: req.description,
          price: req.price && { amountMinor: req.price.amountMinor, currency: req.price.currencyCode },
        }, now());
        if (!(await store.replace(tx, edited, req.expectedVersion))) throw StatusError.aborted(`product ${req.id} changed concurrently; read it again and retry`);
        const message = toProductMessage(edited);
        outbox.add(tx, ProductUpdatedEvent, { productId: edited.id, product: message, changedFields: [...mask] }, context);
        return { product: message };
      }, callTransaction(context));
    },

    async listProducts(req, context) {
      const limit = pageSizeOf(req.pageSize);
      // The request has no filter: a token goes on only this method's list for this caller.
      const scope = pageScope(context);
      const rows = await store.list(db, decodePageToken(req.pageToken, scope), limit + 1);
      const page = listPage(rows, limit, toProductMessage, Product, (p) => p.id, scope);
      return { products: page.items, nextPageToken: page.nextPageToken };
    },

    async adjustStock(req, context) {
      return db.transaction((tx) =>
        requestIds.once(tx, context, req.requestId, AdjustStockResponse, async () => {
          const current = found(await store.getForUpdate(tx, req.id), req.id);
          const adjusted: ProductRecord = { ...current, stock: adjustedStock(current, req.delta), stockVersion: current.stockVersion + 1, updatedAt: now() };
          await store.setStock(tx, adjusted, req.delta, req.reason);
          outbox.add(tx, StockAdjustedEvent, { productId: adjusted.id, delta: req.delta, reason: req.reason, stock: adjusted.stock, version: adjusted.version, stockVersion: adjusted.stockVersion }, context);
          return { product: toProductMessage(adjusted) };
        }),
        callTransaction(context),
      );
    },
  };
}
