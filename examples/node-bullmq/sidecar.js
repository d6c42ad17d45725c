'use strict';
// A small fail-open client of the task-sidecar HTTP API for Node workers (docs/workers.md).
// No dependencies: Node 18+ has fetch. Every call has a short timeout; when the sidecar does
// not answer (down, slow, 429/503, anything but 200) the worker gets a local answer instead
// and the task never waits on, or fails because of, the sidecar.

const LANGUAGE = 'node';

function int(value, low, high) {
  return Number.isInteger(value) && value >= low && value <= high ? value : null;
}

function classChain(err) {
  const names = [];
  for (let proto = Object.getPrototypeOf(err); proto && proto !== Object.prototype;
    proto = Object.getPrototypeOf(proto)) {
    const name = proto.constructor && proto.constructor.name;
    if (name && !names.includes(name)) names.push(name);
  }
  return names;
}

// The `exception` object of a failure event, from any thrown value.
//   type     err.name when it is a class-like name (DOMException's "TimeoutError"), else the
//            constructor's name (pg's DatabaseError has the name "error")
//   mro      the prototype chain's constructor names
//   code     err.code when it is a string, else the first cause's (fetch() throws
//            TypeError("fetch failed") with the socket error as its cause)
//   message  the message and the messages of its causes, joined by ": "
//   http_status  axios err.response.status, or err.status / err.statusCode
function serializeError(err, { tracebackLimit = 16384 } = {}) {
  if (!(err instanceof Object)) err = new Error(String(err));
  const chain = classChain(err);
  const named = typeof err.name === 'string' && /^[A-Z]\w*$/.test(err.name) && err.name !== 'Error';
  const type = (named ? err.name : chain[0]) || 'Error';
  const messages = [];
  let code = null;
  let cause = err;
  for (let depth = 0; cause instanceof Object && depth < 5; depth += 1) {
    if (code === null && typeof cause.code === 'string' && cause.code) code = cause.code;
    const text = cause.message !== undefined ? String(cause.message) : '';
    if (text && !messages.includes(text)) messages.push(text);
    cause = cause.cause;
  }
  const response = err.response instanceof Object ? err.response : {};
  const status = int(response.status, 100, 599) ?? int(err.status, 100, 599)
    ?? int(err.statusCode, 100, 599);
  const stack = typeof err.stack === 'string' ? err.stack : '';
  return {
    type: type.slice(0, 512),
    module: null,
    mro: [...new Set([type, ...chain])].map((name) => name.slice(0, 512)),
    message: messages.join(': ').slice(0, 4096),
    traceback: stack.length > tracebackLimit ? stack.slice(-tracebackLimit) : stack,
    errno: null, // libuv's negative numbers are not the OS errno: `code` carries the name
    http_status: status,
    code: code ? code.slice(0, 128) : null,
    language: LANGUAGE,
  };
}

// The answer when the sidecar cannot give one: at most `maxRetries` retries with
// exponential backoff (half to full of initialDelay * 2^attempt, capped), then dead letter.
function localDecision(attempt, { maxRetries = 3, initialDelay = 10, maxDelay = 300 } = {}) {
  if (attempt >= maxRetries) {
    return {
      action: 'dead_letter', delay_seconds: 0, source: 'default',
      rationale: `sidecar unavailable; conservative default: no retry: ${attempt} retries made`,
    };
  }
  const base = Math.min(maxDelay, initialDelay * 2 ** attempt);
  return {
    action: 'retry', delay_seconds: base / 2 + Math.random() * (base / 2), source: 'default',
    rationale: `sidecar unavailable; conservative default: retry ${attempt + 1}/${maxRetries}`,
  };
}

class SidecarClient {
  constructor(url, { token = null, timeoutMs = 250, fallback = {} } = {}) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
    this.timeoutMs = timeoutMs;
    this.fallback = fallback;
    this.fallbacks = 0;
  }

  async post(path, body) {
    const headers = { 'Content-Type': 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const response = await fetch(this.url + path, {
      method: 'POST', headers, body: JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`sidecar answered ${response.status}`);
    }
    return response.json();
  }

  // The decision for a failed run; never throws.
  async failure({ taskId, taskName, error, attempt = 0, queue = null, args = [], kwargs = {},
    context = {}, dlqId = null }) {
    const event = {
      task_id: String(taskId), task_name: taskName, queue, attempt,
      exception: serializeError(error), context, args, kwargs, dlq_id: dlqId,
    };
    try {
      const answer = await this.post('/v1/hooks/failure', event);
      if (['retry', 'dead_letter', 'discard'].includes(answer.action)) return answer;
    } catch (_) { /* fall through to the local answer */ }
    this.fallbacks += 1;
    return localDecision(attempt, this.fallback);
  }

  // May the task run now? Allows it when the sidecar does not answer.
  async start({ taskId, taskName, attempt = 0, queue = null }) {
    try {
      const answer = await this.post('/v1/hooks/start', {
        task_id: String(taskId), task_name: taskName, attempt, queue,
      });
      if (typeof answer.allow === 'boolean') return answer;
    } catch (_) { /* allowed */ }
    this.fallbacks += 1;
    return { allow: true, delay_seconds: 0, breaker: null, source: 'fallback' };
  }

  // Reports a successful run (resolves its DLQ record when dlqId is set); never throws.
  async success({ taskId, taskName, attempt = 0, runtimeSeconds = null, dlqId = null }) {
    const body = { task_id: String(taskId), task_name: taskName, attempt, dlq_id: dlqId };
    if (runtimeSeconds !== null) body.runtime_seconds = runtimeSeconds;
    try {
      await this.post('/v1/hooks/success', body);
      return true;
    } catch (_) {
      this.fallbacks += 1;
      return false;
    }
  }
}

module.exports = { SidecarClient, localDecision, serializeError };
