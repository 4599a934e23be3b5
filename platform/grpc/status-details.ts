import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import type { FieldViolation } from "../errors/index.js";

/**
 * google.rpc.Status with a google.rpc.BadRequest detail, the payload of the
 * `grpc-status-details-bin` trailer that grpc-go, grpcio, grpc-java and
 * grpcurl decode. Encoded by hand: three tiny, frozen messages do not justify
 * carrying googleapis' .proto files.
 */
const badRequestTypeUrl = "type.googleapis.com/google.rpc.BadRequest";

export function encodeBadRequestStatus(code: number, message: string, violations: readonly FieldViolation[]): Uint8Array {
  const badRequest = new BinaryWriter();
  for (const v of violations) {
    // BadRequest.field_violations = 1 { field = 1; description = 2 }
    badRequest.uint32((1 << 3) | 2).fork().uint32((1 << 3) | 2).string(v.field).uint32((2 << 3) | 2).string(v.description).join();
  }
  const w = new BinaryWriter();
  // Status { code = 1; message = 2; details = 3 (Any { type_url = 1; value = 2 }) }
  w.uint32((1 << 3) | 0).int32(code);
  w.uint32((2 << 3) | 2).string(message);
  w.uint32((3 << 3) | 2).fork().uint32((1 << 3) | 2).string(badRequestTypeUrl).uint32((2 << 3) | 2).bytes(badRequest.finish()).join();
  return w.finish();
}

/** Decoded google.rpc.Status; `violations` collects every BadRequest detail. */
export interface DecodedStatus {
  readonly code: number;
  readonly message: string;
  readonly violations: FieldViolation[];
}

/** Decodes a `grpc-status-details-bin` value; unknown detail types are skipped. */
export function decodeStatusDetails(bytes: Uint8Array): DecodedStatus {
  const r = new BinaryReader(bytes);
  let code = 0;
  let message = "";
  const violations: FieldViolation[] = [];
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1) code = r.int32();
    else if (field === 2) message = r.string();
    else if (field === 3) {
      const any = new BinaryReader(r.bytes());
      let typeUrl = "";
      let value: Uint8Array = new Uint8Array();
      while (any.pos < any.len) {
        const [f, t] = any.tag();
        if (f === 1) typeUrl = any.string();
        else if (f === 2) value = any.bytes();
        else any.skip(t);
      }
      if (typeUrl === badRequestTypeUrl) violations.push(...decodeBadRequest(value));
    } else r.skip(wire);
  }
  return { code, message, violations };
}

function decodeBadRequest(bytes: Uint8Array): FieldViolation[] {
  const r = new BinaryReader(bytes);
  const out: FieldViolation[] = [];
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field !== 1) {
      r.skip(wire);
      continue;
    }
    const fv = new BinaryReader(r.bytes());
    let name = "";
    let description = "";
    while (fv.pos < fv.len) {
      const [f, t] = fv.tag();
      if (f === 1) name = fv.string();
      else if (f === 2) description = fv.string();
      else fv.skip(t);
    }
    out.push({ field: name, description });
  }
  return out;
}
