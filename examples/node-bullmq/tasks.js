'use strict';
// The example's jobs, the ones tests/test_node_bullmq_e2e.py runs. Each records its run in
// the Redis list `runs:<tag>` and fails while the key `fault:<tag>` is set (or for its
// first `failTimes` runs), so a test decides when a job fails and how.

const Redis = require('ioredis');

class DatabaseError extends Error {} // as node-postgres names its server errors

function handlers(connection) {
  const redis = new Redis({ ...connection, maxRetriesPerRequest: 3 });

  async function record(tag, { job, attempt, dlqId }) {
    return redis.rpush(`runs:${tag}`, JSON.stringify({
      t: Date.now() / 1000, attempt, dlq_id: dlqId, job_id: job.id,
    }));
  }

  async function faulty(tag, failTimes, runs) {
    return (await redis.exists(`fault:${tag}`)) === 1 || runs <= failTimes;
  }

  return {
    // A deadlock (SQLSTATE 40P01, as node-postgres reports it) while faulty.
    async 'e2e.db_write'([tag, failTimes = 0], kwargs, run) {
      const runs = await record(tag, run);
      if (await faulty(tag, failTimes, runs)) {
        throw Object.assign(new DatabaseError('deadlock detected'), { code: '40P01' });
      }
      await redis.rpush(`done:${tag}`, String(Date.now() / 1000));
      return 'ok';
    },
    // Bad input: JSON that does not parse, every time.
    async 'e2e.validate'([tag], kwargs, run) {
      await record(tag, run);
      return JSON.parse(`{"tag": ${tag}`);
    },
    // A reset connection (TRANSIENT_NETWORK, with a breaker) while faulty.
    async 'e2e.fetch'([tag], kwargs, run) {
      const runs = await record(tag, run);
      if (await faulty(tag, 0, runs)) {
        throw Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', errno: -104 });
      }
      await redis.rpush(`done:${tag}`, String(Date.now() / 1000));
      return 'ok';
    },
    // A report whose input is bad; the test's policy discards its failures.
    async 'e2e.report'([tag], kwargs, run) {
      await record(tag, run);
      throw new RangeError('Invalid time value');
    },
  };
}

module.exports = { handlers };
