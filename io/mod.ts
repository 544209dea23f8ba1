/**
 * File formats: Hugging Face safetensors (read and write, bit-exact) with `config.json`.
 * @module
 */
export {
  type DecodedSafetensors,
  decodeSafetensors,
  entryToTensor,
  loadInto,
  loadSafetensors,
  parseSafetensors,
  readSafetensorsHeader,
  type SafetensorsDType,
  type SafetensorsEntry,
  type Saveable,
  type SaveOptions,
  saveSafetensors,
  serializeSafetensors,
} from "./safetensors.ts";
