// qwen3-torch: run Qwen3 language models from Node.js through libtorch.
export {
  DTYPES,
  MODEL_SIZES,
  QUANTIZE_KINDS,
  QWEN_CONFIG_06_B,
  QWEN_CONFIG_1_7_B,
  QWEN_CONFIG_4_B,
  QWEN_CONFIG_8_B,
  QWEN_CONFIG_14_B,
  QWEN_CONFIG_32_B,
  loadConfigFile,
  parseConfig,
  type Dtype,
  type ModelSize,
  type Quantize,
  type Qwen3Config,
} from './config.js';
export { availableDevices, getDevice, memoryStats, resetPeakMemory, resolveDevice, setTensorCores, type DeviceName, type MemoryStats } from './device.js';
export {
  MAX_BATCH_SIZE,
  PREFILL_CHUNK_SIZE,
  generateTextBasic,
  generateTextBasicCache,
  generateTextBasicStream,
  generateTextBasicStreamCache,
  formatStats,
  generateBatchCache,
  generateStats,
  type GenerateOptions,
  type GenerationStats,
} from './generate.js';
export { runtimeInfo, type RuntimeInfo } from './info.js';
export { IDLE_HANDOVER_MS, Qwen3Model, type LoadOptions, type Logits, type LogitsMode, type SlotRow, type SlotRowOutput, type SlotSampling, type SlotStepOptions, type StepOutput, type StepsOutput, type TokenIds, type TokenLogprob } from './model.js';
export type { ProcessGroupOptions } from './model/process-group.js';
export { InvalidOptionError } from './validate.js';
export { BatchScheduler, QueueFullError, type FinishReason, type GeneratedToken, type SchedulerOptions, type SchedulerStats, type SequenceRequest, type SequenceStream, type SequenceUsage } from './batch/scheduler.js';
export { ChatSession, type ChatSessionGenerateOptions } from './chat-session.js';
export { Qwen3Tokenizer, SPECIAL_TOKENS, defaultTokenizerFilePath, formatChat, type ChatMessage, type StreamDecoder, type TokenizerLoadOptions } from './tokenizer.js';
export { CHAT_ROLES, ChatTemplate, splitThinking, type ApplyChatTemplateOptions, type ChatRole, type TemplateMessage, type ToolCall } from './tokenizer/chat-template.js';
export { readGenerationConfig, withSamplingDefaults, type GenerationConfig, type SamplingDefaults } from './model/generation-config.js';
export { DEFAULT_BASE_URL, downloadQwen3Small, type DownloadOptions, type DownloadResult } from './download.js';
export { formatModelSummary } from './summary.js';
export { downloadModel, resolveModelDir, type HubDownloadOptions, type HubDownloadResult, type HubProgress } from './hub/model.js';
export { isRepoId } from './hub/settings.js';
