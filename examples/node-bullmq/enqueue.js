'use strict';
// Adds a job: node enqueue.js NAME '[args...]'  (REDIS_URL, QUEUE as for main.js)
const { Queue } = require('bullmq');

async function main() {
  const [name, args = '[]'] = process.argv.slice(2);
  const u = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379/0');
  const queue = new Queue(process.env.QUEUE || 'tasks', {
    connection: { host: u.hostname, port: Number(u.port || 6379), db: Number(u.pathname.slice(1) || 0) },
  });
  const job = await queue.add(name, { args: JSON.parse(args), kwargs: {} });
  console.log(job.id);
  await queue.close();
}

main().catch((error) => { console.error(error); process.exit(1); });
