import { StatusError } from "../../../platform/errors/index.js";
import { decodePageToken, encodePageToken, pageSizeOf, type ServiceImpl } from "../../../platform/grpc/index.js";
import { uuidv7 } from "../../../platform/ids/index.js";
import type { RequestIds } from "../../../platform/idempotency/index.js";
import type { Database } from "../../../platform/sql/index.js";
import { AdjustStockResponse, CreateProductResponse, type Product, ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { adjustedStock, type EditableField, editProduct, type ProductRecord } from "../domain/product.js";
import type { ProductStore } from "../store/product-store.js";

/** What the product service's gRPC port needs. */
export interface ProductServiceDeps {
  readonly db: Database;
  readonly store: ProductStore;
  /** Request ids of CreateProduct and AdjustStock calls, so a repeated call has no second effect. */
  readonly requestIds: RequestIds;
  /** Hook for the changes' events, run inside their transaction. */
  readonly onChange?: ProductChangeListener;
  readonly now?: () => number;
}

/** Told about every change inside the transaction that makes it, so its events commit with it. */
export interface ProductChangeListener {
  created(product: ProductRecord): void;
  updated(product: ProductRecord, changedFields: readonly string[]): void;
  stockAdjusted(product: ProductRecord, delta: number, reason: string): void;
}

/** Maps a stored product to its contract form. */
export function toProductMessage(p: ProductRecord): Product {
  return {
    id: p.id,
    name: p.name,
    description: p.description,
    price: { currencyCode: p.currency, amountMinor: p.priceMinor },
    stock: p.stock,
    version: p.version,
    stockVersion: p.stockVersion,
    createTime: new Date(p.createdAt),
    updateTime: new Date(p.updatedAt),
  };
}

/** ProductService: the contract's methods over the product store. */
export function createProductService(deps: ProductServiceDeps): ServiceImpl<typeof ProductServiceService> {
  const { db, store, requestIds, onChange } = deps;
  const now = deps.now ?? Date.now;
  const mustGet = (id: string): ProductRecord => {
    const product = store.get(id);
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
      return db.transaction(() =>
        requestIds.once(context, req.requestId, CreateProductResponse, () => {
          store.insert(product);
          onChange?.created(product);
          return { product: toProductMessage(product) };
        }),
      );
    },

    async getProduct(req) {
      return { product: toProductMessage(mustGet(req.id)) };
    },

    async batchGetProducts(req) {
      return { products: store.getMany(req.ids).map(toProductMessage) };
    },

    async updateProduct(req) {
      const mask = (req.updateMask ?? []) as EditableField[];
      const next = db.transaction(() => {
        const current = mustGet(req.id);
        const edited = editProduct(current, req.expectedVersion, mask, {
          name: req.name,
          description: req.description,
          price: req.price && { amountMinor: req.price.amountMinor, currency: req.price.currencyCode },
        }, now());
        if (!store.replace(edited, req.expectedVersion)) throw StatusError.aborted(`product ${req.id} changed concurrently; read it again and retry`);
        onChange?.updated(edited, mask);
        return edited;
      });
      return { product: toProductMessage(next) };
    },

    async listProducts(req) {
      const limit = pageSizeOf(req.pageSize);
      const page = store.list(decodePageToken(req.pageToken), limit + 1);
      const more = page.length > limit;
      const products = page.slice(0, limit);
      return { products: products.map(toProductMessage), nextPageToken: more ? encodePageToken(products[products.length - 1].id) : "" };
    },

    async adjustStock(req, context) {
      return db.transaction(() =>
        requestIds.once(context, req.requestId, AdjustStockResponse, () => {
          const current = mustGet(req.id);
          const adjusted: ProductRecord = { ...current, stock: adjustedStock(current, req.delta), stockVersion: current.stockVersion + 1, updatedAt: now() };
          store.setStock(adjusted.id, adjusted.stock, adjusted.stockVersion, adjusted.updatedAt, req.delta, req.reason);
          onChange?.stockAdjusted(adjusted, req.delta, req.reason);
          return { product: toProductMessage(adjusted) };
        }),
      );
    },
  };
}
