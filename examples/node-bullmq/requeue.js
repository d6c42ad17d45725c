'use strict';
// The sidecar's webhook requeue target (TASK_SIDECAR_REQUEUE=webhook): a dead-lettered
// task retried by an operator arrives here, signed with HMAC-SHA256, and goes back on the
// BullMQ queue with its DLQ id, which the worker sends with the run's success.

const crypto = require('node:crypto');
const http = require('node:http');

const TOLERANCE_SECONDS = 300;

function verify(secret, body, header, now = Date.now() / 1000) {
  const parts = Object.fromEntries(String(header || '').split(',')
    .map((item) => item.split('=', 2)).filter((pair) => pair.length === 2));
  if (!parts.t || !parts.v1 || Math.abs(now - Number(parts.t)) > TOLERANCE_SECONDS) return false;
  const expected = crypto.createHmac('sha256', secret).update(`${parts.t}.`).update(body)
    .digest('hex');
  const given = Buffer.from(parts.v1, 'utf8');
  return given.length === expected.length
    && crypto.timingSafeEqual(given, Buffer.from(expected, 'utf8'));
}

function createRequeueServer({ queue, secret, log = console }) {
  return http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      if (req.method !== 'POST' || !verify(secret, body, req.headers['x-task-sidecar-signature'])) {
        res.writeHead(401).end();
        return;
      }
      try {
        const record = JSON.parse(body);
        const job = await queue.add(record.task_name, {
          args: record.args, kwargs: record.kwargs, context: record.context,
          sidecar: { attempt: 0, dlqId: record.id, taskId: record.task_id },
        }, { priority: Math.max(1, 11 - Number(record.priority || 6)) });
        log.info(`requeued DLQ record ${record.id} as job ${job.id}`);
        res.writeHead(202, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ job_id: job.id }));
      } catch (error) {
        log.error(`requeue failed: ${error.message}`);
        res.writeHead(500).end();
      }
    });
  });
}

module.exports = { createRequeueServer, verify };
