'use strict';
// A BullMQ worker whose failures are decided by task-sidecar (docs/workers.md):
//   start    ask /v1/hooks/start; a refusal (open breaker) puts the job back in the delayed
//            set for `delay_seconds` without counting an attempt
//   failure  ask /v1/hooks/failure and apply the answer:
//              retry        back to the delayed set after `delay_seconds`, attempt + 1
//              dead_letter  the job fails (BullMQ keeps it in its failed set; the sidecar
//                           has it in its dead-letter queue)
//              discard      the job fails and is removed
//   success  report it, with the DLQ id when the job came from a dead-letter retry
// The attempt count lives in the job's data (`sidecar.attempt`), not in BullMQ's
// attemptsMade, so a postponement is not an attempt. When the sidecar does not answer the
// client decides locally (sidecar.js): the job never waits on the sidecar.

const { DelayedError, Worker } = require('bullmq');

const { SidecarClient } = require('./sidecar');

function sidecarState(job) {
  return { attempt: 0, dlqId: null, ...(job.data.sidecar || {}) };
}

async function putBack(job, token, delaySeconds, state) {
  await job.updateData({ ...job.data, sidecar: state });
  await job.moveToDelayed(Date.now() + Math.max(0, delaySeconds) * 1000, token);
  throw new DelayedError(); // tells BullMQ the job was moved, not failed
}

function createWorker({ queueName, connection, handlers, sidecar, log = console,
  concurrency = 1 }) {
  const client = sidecar instanceof SidecarClient ? sidecar
    : new SidecarClient(sidecar.url, sidecar);

  async function process(job, token) {
    const state = sidecarState(job);
    const handler = handlers[job.name];
    if (!handler) throw new Error(`no handler for job ${job.name}`);
    const { args = [], kwargs = {} } = job.data;
    // A DLQ retry runs under the record's task id: the sidecar lets a run resolve only
    // the record of its own task.
    const taskId = state.taskId || job.id;

    const start = await client.start({ taskId, taskName: job.name, attempt: state.attempt,
      queue: queueName });
    if (!start.allow) {
      log.info(`${job.name}[${taskId}] postponed ${start.delay_seconds}s by the sidecar`);
      await putBack(job, token, start.delay_seconds, state);
    }

    const began = Date.now();
    let result;
    try {
      result = await handler(args, kwargs, { job, attempt: state.attempt, dlqId: state.dlqId });
    } catch (error) {
      const decision = await client.failure({
        taskId, taskName: job.name, error, attempt: state.attempt, queue: queueName,
        args, kwargs, context: job.data.context || {}, dlqId: state.dlqId,
      });
      const source = decision.source ? ` (${decision.source})` : '';
      if (decision.action === 'retry') {
        log.info(`${job.name}[${taskId}] retry in ${decision.delay_seconds}s${source}`);
        await putBack(job, token, decision.delay_seconds, { ...state, attempt: state.attempt + 1 });
      }
      if (decision.action === 'discard') {
        log.info(`${job.name}[${taskId}] discarded${source}: ${decision.rationale}`);
        await job.updateData({ ...job.data, sidecar: { ...state, discarded: true } });
      } else {
        log.info(`${job.name}[${taskId}] dead-lettered ${decision.dlq_id || ''}${source}`);
      }
      throw error; // the job fails: attempts is 1, BullMQ does not retry it by itself
    }
    await client.success({ taskId, taskName: job.name, attempt: state.attempt,
      runtimeSeconds: (Date.now() - began) / 1000, dlqId: state.dlqId });
    return result;
  }

  const worker = new Worker(queueName, process, { connection, concurrency });
  worker.on('failed', (job) => {
    if (job && job.data.sidecar && job.data.sidecar.discarded) {
      job.remove().catch((e) => log.error(`cannot remove discarded job ${job.id}: ${e}`));
    }
  });
  worker.on('error', (e) => log.error(`worker error: ${e.message}`));
  return worker;
}

module.exports = { createWorker };
