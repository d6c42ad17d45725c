'use strict';
// Runs the example: a BullMQ worker for the jobs of tasks.js and the requeue webhook.
//   REDIS_URL        redis://127.0.0.1:6379/0
//   QUEUE            tasks
//   SIDECAR_URL      http://127.0.0.1:8080      SIDECAR_TOKEN  a token with the hooks role
//   WEBHOOK_PORT     8090 (0: no webhook)       WEBHOOK_SECRET the sidecar's TASK_SIDECAR_WEBHOOK_SECRET
//   SIDECAR_TIMEOUT_MS 250                      SIDECAR_FALLBACK_INITIAL_DELAY 10 (seconds)

const { Queue } = require('bullmq');

const { SidecarClient } = require('./sidecar');
const tasks = require('./tasks');
const { createRequeueServer } = require('./requeue');
const { createWorker } = require('./worker');

function connectionFrom(url) {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 6379), db: Number(u.pathname.slice(1) || 0),
    maxRetriesPerRequest: null };
}

async function main() {
  const env = process.env;
  const connection = connectionFrom(env.REDIS_URL || 'redis://127.0.0.1:6379/0');
  const queueName = env.QUEUE || 'tasks';
  const sidecar = new SidecarClient(env.SIDECAR_URL || 'http://127.0.0.1:8080', {
    token: env.SIDECAR_TOKEN || null,
    timeoutMs: Number(env.SIDECAR_TIMEOUT_MS || 250),
    // The local default when the sidecar does not answer: 10 s × 2^attempt, 3 retries.
    fallback: { initialDelay: Number(env.SIDECAR_FALLBACK_INITIAL_DELAY || 10) },
  });
  const worker = createWorker({ queueName, connection, sidecar, handlers: tasks.handlers(connection) });
  const closers = [() => worker.close()];
  const port = Number(env.WEBHOOK_PORT || 8090);
  if (port) {
    const queue = new Queue(queueName, { connection });
    const server = createRequeueServer({ queue, secret: env.WEBHOOK_SECRET || '' });
    await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => server.close(resolve)), () => queue.close());
  }
  await worker.waitUntilReady();
  console.log(`ready: queue ${queueName}, webhook port ${port || 'off'}`);
  const stop = async () => {
    for (const close of closers) await close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => { console.error(error); process.exit(1); });
