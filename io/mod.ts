/**
 * File formats: Hugging Face safetensors (read and write, bit-exact) with `config.json`, and
 * `save_pretrained`-style model directories (single file or shards + index).
 * @module
 */
import "../ops/tensor_methods.ts";
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
export {
  DEFAULT_MAX_SHARD_SIZE,
  type LoadPretrainedOptions,
  loadPretrainedWeights,
  planShards,
  readPretrainedConfig,
  savePretrained,
  type SavePretrainedOptions,
  WEIGHTS_INDEX_NAME,
  WEIGHTS_NAME,
} from "./pretrained.ts";
