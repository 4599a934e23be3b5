import { StatusError } from "../../../platform/errors/index.js";

/** A product as the product service keeps it. Money is in minor units. */
export interface ProductRecord {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly priceMinor: number;
  readonly currency: string;
  /** Units on hand and not reserved. Never negative. */
  readonly stock: number;
  /** Units held for orders; with `stock`, never above `maxUnits`. */
  readonly reserved: number;
  /** Raised by every change of the catalogue fields (name, description, price); what UpdateProduct's expected_version guards. */
  readonly version: number;
  /** Raised by every change of stock (AdjustStock, reservations), which leaves `version` alone. */
  readonly stockVersion: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** Fields UpdateProduct may change. */
export type EditableField = "name" | "description" | "price";

export interface ProductEdits {
  readonly name?: string;
  readonly description?: string;
  readonly price?: { readonly amountMinor: number; readonly currency: string };
}

/**
 * Applies the masked edits to a product the caller saw at `expectedVersion`.
 * ABORTED when the product changed since; the version goes up by one.
 */
export function editProduct(product: ProductRecord, expectedVersion: number, mask: readonly EditableField[], edits: ProductEdits, now: number): ProductRecord {
  if (product.version !== expectedVersion) {
    throw StatusError.aborted(`product ${product.id} is at version ${product.version}, not ${expectedVersion}; read it again and retry`);
  }
  let next: ProductRecord = { ...product, version: product.version + 1, updatedAt: now };
  for (const field of mask) {
    if (field === "name") next = { ...next, name: edits.name ?? "" };
    else if (field === "description") next = { ...next, description: edits.description ?? "" };
    else if (field === "price" && edits.price) next = { ...next, priceMinor: edits.price.amountMinor, currency: edits.price.currency };
  }
  return next;
}

/**
 * The most units of one product the shop keeps track of, on hand and held
 * for orders together: what a contract's int32 stock carries with room to
 * spare, so that releasing held units can never overflow it.
 */
export const maxUnits = 1_000_000_000;

/**
 * Stock after adding `delta`: FAILED_PRECONDITION when it would go below
 * zero, OUT_OF_RANGE (naming `delta`) when stock on hand plus the units held
 * for orders would go above `maxUnits`.
 */
export function adjustedStock(product: ProductRecord, delta: number): number {
  const stock = product.stock + delta;
  if (stock < 0) {
    throw StatusError.failedPrecondition(`product ${product.id} has ${product.stock} in stock; removing ${-delta} would make it negative`);
  }
  if (stock + product.reserved > maxUnits) {
    const description = `would take product ${product.id} to ${stock} on hand plus ${product.reserved} held for orders, above the limit of ${maxUnits} units`;
    throw StatusError.outOfRange("delta", description);
  }
  return stock;
}
