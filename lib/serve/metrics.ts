// The server's Prometheus metrics, in a registry of its own (several servers in one process, or a
// host application with its own metrics, never mix). The queue, running rows and generated
// tokens are read from the completer when scraped; tokens per second is
// rate(qwen3_generated_tokens_total[1m]).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Completer } from './completer.js';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'endpoint' | 'status'>;
  readonly promptTokens: Counter;
  readonly timeToFirstToken: Histogram;

  constructor(completer: Completer) {
    const registers = [this.registry];
    let counted = 0;
    new Gauge({
      name: 'qwen3_queue_length',
      help: 'Requests waiting for the model',
      registers,
      collect() {
        this.set(completer.stats().queued);
      },
    });
    new Gauge({
      name: 'qwen3_running_requests',
      help: 'Requests being generated (rows of the running batch)',
      registers,
      collect() {
        this.set(completer.stats().running);
      },
    });
    new Counter({
      name: 'qwen3_generated_tokens_total',
      help: 'Tokens generated, stop tokens included; rate() of it is the tokens per second',
      registers,
      collect() {
        const total = completer.stats().generatedTokens;
        this.inc(total - counted);
        counted = total;
      },
    });
    this.promptTokens = new Counter({ name: 'qwen3_prompt_tokens_total', help: 'Prompt tokens of the completions started', registers });
    this.requests = new Counter({
      name: 'qwen3_requests_total',
      help: 'HTTP requests answered, by endpoint and status code',
      labelNames: ['endpoint', 'status'],
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'qwen3_time_to_first_token_seconds',
      help: 'From a completion request arriving to its first generated token',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
  }
}
