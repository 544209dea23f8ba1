import { MoongradError } from "./errors.ts";

/**
 * Element types a Tensor can hold. `bool` is stored as one u32 per element.
 *
 * @example Choose the element type of a tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const dtype: mg.DType = "i32";
 * const ids = mg.tensor([3, 1, 2], { dtype });
 * console.log(ids.dtype, await ids.data()); // i32 Int32Array(3) [ 3, 1, 2 ]
 * ```
 */
export type DType = "f32" | "f16" | "i32" | "bool";

/** Typed array returned by `Tensor.data()` for each dtype. */
export type TypedArrayFor<D extends DType> = D extends "f32" ? Float32Array
  : D extends "f16" ? Float32Array
  : D extends "i32" ? Int32Array
  : Uint8Array;

/**
 * Any typed array `data()` can return.
 *
 * @example The typed array data() returns for each dtype
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const mask: mg.TensorData = await mg.tensor([1, 5, 3]).gt(2).data();
 * console.log(mask); // Uint8Array(3) [ 0, 1, 1 ]
 * ```
 */
export type TensorData = Float32Array | Int32Array | Uint8Array;

/** Bytes one element takes in a GPU buffer. */
export function byteSize(dtype: DType): number {
  return dtype === "f16" ? 2 : 4;
}

/** The WGSL scalar type a dtype is stored as. */
export function wgslType(dtype: DType): string {
  switch (dtype) {
    case "f32":
      return "f32";
    case "f16":
      return "f16";
    case "i32":
      return "i32";
    case "bool":
      return "u32";
  }
}

/** True for f32 and f16. */
export function isFloat(dtype: DType): boolean {
  return dtype === "f32" || dtype === "f16";
}

/** Throws unless `dtype` is one of the dtypes moongrad knows. */
export function checkDType(op: string, dtype: unknown): DType {
  if (dtype === "f32" || dtype === "f16" || dtype === "i32" || dtype === "bool") return dtype;
  throw new MoongradError(
    op,
    `unknown dtype ${String(dtype)}; expected "f32", "f16", "i32" or "bool"`,
  );
}

/**
 * Throws unless every host value converts exactly to `dtype`: for i32, integers in
 * [-2³¹, 2³¹); NaN, ±Infinity, fractions and out-of-range values are refused (a silent
 * conversion would store 0 for NaN, truncate 1.5 to 1 and wrap 3e9 to -1294967296). The error
 * names the first bad value and its flat position. Floats and bools accept any number.
 */
export function checkHostValues(op: string, dtype: DType, values: ArrayLike<number>): void {
  if (dtype !== "i32" || values instanceof Int32Array) return;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isInteger(v) && v >= -2147483648 && v <= 2147483647) continue;
    throw new MoongradError(
      op,
      `value ${v} at flat position ${i} is not an i32: dtype i32 takes integers in ` +
        `[-2147483648, 2147483647] (no NaN, Infinity or fractions; round or cast explicitly)`,
    );
  }
}

/** Encodes JS numbers into the bytes a GPU buffer of `dtype` holds. */
export function encode(dtype: DType, values: ArrayLike<number>): Uint8Array<ArrayBuffer> {
  switch (dtype) {
    case "f32":
      return new Uint8Array(Float32Array.from(values).buffer);
    case "f16":
      return new Uint8Array(Float16Array.from(values).buffer);
    case "i32":
      return new Uint8Array(Int32Array.from(values).buffer);
    case "bool":
      return new Uint8Array(Uint32Array.from(values, (v) => (v ? 1 : 0)).buffer);
  }
}

/** Decodes bytes read back from a GPU buffer into the typed array `data()` returns. */
export function decode(dtype: DType, bytes: ArrayBuffer, count: number): TensorData {
  switch (dtype) {
    case "f32":
      return new Float32Array(bytes, 0, count).slice();
    case "f16":
      return Float32Array.from(new Float16Array(bytes, 0, count));
    case "i32":
      return new Int32Array(bytes, 0, count).slice();
    case "bool":
      return Uint8Array.from(new Uint32Array(bytes, 0, count));
  }
}
