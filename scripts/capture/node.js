#!/usr/bin/env node
'use strict';
// Real errors of the libraries a Node worker uses, in the wire shape a worker sends
// (examples/node-bullmq/sidecar.js serializeError). Prints one JSON row a line:
//   {"case", "expected", "acceptable"?, "exception"}
// Run through scripts/capture/capture-other.py, which writes tests/data/exceptions-other.jsonl.
//
// Provoked for real on this machine: throw-away TCP/HTTP/TLS servers on 127.0.0.1, closed
// port 127.0.0.1:1, /dev/full, private redis-server processes, and a scratch database and
// role on the PostgreSQL at $CAPTURE_PG_URL (default postgresql://postgres@127.0.0.1:5432/test,
// superuser; both dropped at the end). Needs `npm ci` in scripts/capture first.

const assert = require('node:assert');
const childProcess = require('node:child_process');
const dns = require('node:dns');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const axios = require('axios');
const Redis = require('ioredis');
const pg = require('pg');
const undici = require('undici');

const { serializeError } = require('../../examples/node-bullmq/sidecar.js');

const PG_URL = process.env.CAPTURE_PG_URL || 'postgresql://postgres@127.0.0.1:5432/test';
const SCRATCH_DB = 'sidecar_capture_node';
const SCRATCH_ROLE = 'sidecar_capture_node_role';
// A port nobody listens on (fetch refuses port 1 itself: "bad port").
let CLOSED_PORT;
let CLOSED;
const cases = new Set();

function record(name, expected, error, acceptable) {
  assert(!cases.has(name), `duplicate case ${name}`);
  cases.add(name);
  const exception = serializeError(error);
  delete exception.traceback; // machine-specific paths; not used for classification
  const row = { case: name, expected, exception };
  if (acceptable) row.acceptable = acceptable;
  process.stdout.write(`${JSON.stringify(row)}\n`);
}

// Run `action` (sync or async), which must throw, and record what it threw.
async function capture(name, expected, action, { acceptable, noStatusVariant } = {}) {
  let error;
  try {
    await action();
  } catch (caught) {
    error = caught;
  }
  assert(error !== undefined, `${name}: nothing was thrown`);
  record(name, expected, error, acceptable);
  if (noStatusVariant) {
    const exception = serializeError(error);
    assert(exception.http_status !== null, `${name}: no status to drop`);
    error.response = undefined; // axios keeps the status in both places
    error.status = undefined;
    record(`${name} (no status)`, expected, error, acceptable);
  }
}

// --- throw-away servers --------------------------------------------------------------------

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

async function tcpServer(behaviour) {
  const kept = [];
  const server = net.createServer((socket) => {
    if (behaviour === 'silent') kept.push(socket);
    else if (behaviour === 'reset') setTimeout(() => socket.resetAndDestroy(), 20);
    else if (behaviour === 'close') socket.once('data', () => socket.destroy());
  });
  const port = await listen(server);
  return { port, close: () => { kept.forEach((s) => s.destroy()); server.close(); } };
}

function statusServer() {
  return http.createServer((req, res) => {
    const [, kind, code] = req.url.split('/');
    if (kind === 'status') {
      res.writeHead(Number(code), { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: http.STATUS_CODES[code] }));
    } else if (kind === 'hangup') {
      req.socket.destroy();
    } else if (kind === 'slow') {
      setTimeout(() => { res.writeHead(200); res.end('{}'); }, 3000);
    } else {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{"ok": true');
    }
  });
}

function selfSigned(dir) {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  childProcess.execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
  return { key: fs.readFileSync(key), cert: fs.readFileSync(cert) };
}

async function redisServer(dir, ...extra) {
  const probe = net.createServer();
  const port = await listen(probe);
  await new Promise((resolve) => probe.close(resolve));
  const proc = childProcess.spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], { stdio: 'ignore' });
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    assert(Date.now() < deadline, 'redis-server did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { port, stop: () => proc.kill('SIGTERM') };
}

function connectOnce(port, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    socket.on('connect', () => socket.write('hello\n'));
    socket.on('error', reject);
    socket.on('close', () => resolve());
  });
}

// --- families ------------------------------------------------------------------------------

async function core(ports, tmp) {
  await capture('net.connect to a closed port (ECONNREFUSED)', 'EXTERNAL_API_DOWN',
    () => connectOnce(CLOSED_PORT));
  await capture('net socket reset by the peer (ECONNRESET)', 'TRANSIENT_NETWORK',
    () => connectOnce(ports.reset));
  await capture('net write after the peer closed (EPIPE)', 'TRANSIENT_NETWORK', () => new Promise(
    (resolve, reject) => {
      // Half-open, so the socket stays writable after the peer's FIN: writes then fail.
      const socket = net.connect({ port: ports.close, host: '127.0.0.1', allowHalfOpen: true });
      socket.on('connect', () => socket.write('x'));
      socket.on('end', () => {
        const timer = setInterval(() => socket.write(Buffer.alloc(65536)), 5);
        socket.on('error', (e) => { clearInterval(timer); reject(e); });
        setTimeout(() => { clearInterval(timer); resolve(); }, 2000);
      });
    }));
  await capture('dns.lookup unknown host (getaddrinfo)', 'TRANSIENT_NETWORK',
    () => dns.promises.lookup('sidecar-capture.invalid'));
  await capture('dns.resolve4 with no reachable DNS server (c-ares)', 'TRANSIENT_NETWORK',
    () => dns.promises.resolve4('sidecar-capture.invalid'));

  await capture('fs.readFileSync missing file (ENOENT)', 'PERMANENT_NOT_FOUND',
    () => fs.readFileSync(path.join(tmp, 'missing', 'report.csv')));
  await capture('fs.readdirSync on a file (ENOTDIR)', 'PERMANENT_NOT_FOUND',
    () => fs.readdirSync(path.join(tmp, 'cert.pem')));
  await capture('fs.writeFileSync to /dev/full (ENOSPC)', 'SYSTEM_DISK_FULL',
    () => fs.writeFileSync('/dev/full', 'x'.repeat(10000)));
  const noexec = path.join(tmp, 'not-executable.sh');
  fs.writeFileSync(noexec, '#!/bin/sh\n', { mode: 0o600 });
  await capture('execFileSync a non-executable file (EACCES)', 'PERMANENT_PERMISSION',
    () => childProcess.execFileSync(noexec));
  await capture('spawnSync a missing program (ENOENT)', 'CONFIG_MISSING_SERVICE',
    () => { const r = childProcess.spawnSync('sidecar-capture-no-such-tool'); throw r.error; },
    { acceptable: ['PERMANENT_NOT_FOUND'] });
  await capture('too many open files (EMFILE, ulimit -n 30)', 'PERMANENT_LOGIC', () => {
    const child = childProcess.spawnSync('sh', ['-c', 'ulimit -n 30; exec "$0" -e "$1"',
      process.execPath, "const fs=require('fs');const a=[];try{for(;;)a.push(fs.openSync('/dev/null','r'))}"
      + 'catch(e){process.stdout.write(JSON.stringify({code:e.code,message:e.message}))}']);
    const { code, message } = JSON.parse(child.stdout.toString());
    throw Object.assign(new Error(message), { code });
  });
  await capture('zlib.gunzipSync on bad data (Z_DATA_ERROR)', 'PERMANENT_VALIDATION',
    () => zlib.gunzipSync(Buffer.from('not gzip')));
  await capture('require a missing module (MODULE_NOT_FOUND)', 'CONFIG_MISSING_SERVICE',
    () => require('sidecar-capture-no-such-module'));
  await capture('JavaScript heap out of memory (--max-old-space-size=16)', 'SYSTEM_OUT_OF_MEMORY',
    () => {
      const child = childProcess.spawnSync(process.execPath, ['--max-old-space-size=16', '-e',
        'const a=[];for(;;)a.push(new Array(1e5).fill(1))']);
      const fatal = child.stderr.toString().split('\n').find((l) => l.includes('FATAL ERROR'));
      assert(fatal, child.stderr.toString());
      // What a parent (a sandboxed processor's supervisor) reports: the child's last words.
      throw new Error(`worker process exited (${child.signal || child.status}): ${fatal.trim()}`);
    });

  // Plain JavaScript.
  await capture("JSON.parse('{') (SyntaxError)", 'PERMANENT_VALIDATION', () => JSON.parse('{'));
  await capture("JSON.parse('') (empty body)", 'PERMANENT_VALIDATION', () => JSON.parse(''));
  await capture("BigInt('12.5') (SyntaxError)", 'PERMANENT_VALIDATION', () => BigInt('12.5'));
  await capture("new Date('next tuesday').toISOString() (RangeError)", 'PERMANENT_VALIDATION',
    () => new Date('next tuesday').toISOString());
  await capture("new URL('not a url') (ERR_INVALID_URL)", 'PERMANENT_VALIDATION',
    () => new URL('not a url'), { acceptable: ['CONFIG_INVALID_SETTING'] });
  await capture('property of undefined (TypeError)', 'PERMANENT_LOGIC',
    () => { const order = undefined; return order.id; });
  await capture('undefined variable (ReferenceError)', 'PERMANENT_LOGIC',
    // eslint-disable-next-line no-undef
    () => totalAmount + 1);
  await capture('unbounded recursion (RangeError)', 'PERMANENT_LOGIC',
    () => { const f = () => f(); f(); });
  await capture("Buffer.from(undefined) (ERR_INVALID_ARG_TYPE)", 'PERMANENT_LOGIC',
    () => Buffer.from(undefined));
}

async function httpFamily(ports, tls) {
  await capture('http.get closed port (ECONNREFUSED)', 'EXTERNAL_API_DOWN',
    () => new Promise((resolve, reject) => http.get(CLOSED, resolve).on('error', reject)));
  await capture('http.get socket hang up (ECONNRESET)', 'TRANSIENT_NETWORK',
    () => new Promise((resolve, reject) => http.get(`http://127.0.0.1:${ports.http}/hangup`,
      resolve).on('error', reject)));
  await capture('https.get self-signed certificate', 'CONFIG_INVALID_SETTING',
    () => new Promise((resolve, reject) => https.get(`https://127.0.0.1:${ports.https}/`,
      resolve).on('error', reject)));
  await capture('https.get certificate for another host (ERR_TLS_CERT_ALTNAME_INVALID)',
    'CONFIG_INVALID_SETTING', () => new Promise((resolve, reject) => https.get(
      { host: '127.0.0.1', port: ports.https, path: '/', ca: tls.cert }, resolve,
    ).on('error', reject)));
  await capture('https.get to a plain HTTP port (EPROTO)', 'CONFIG_INVALID_SETTING',
    () => new Promise((resolve, reject) => https.get(`https://127.0.0.1:${ports.http}/`,
      resolve).on('error', reject)));

  await capture('fetch closed port (fetch failed, ECONNREFUSED)', 'EXTERNAL_API_DOWN',
    () => fetch(CLOSED));
  await capture('fetch server hangs up (fetch failed, UND_ERR_SOCKET)', 'TRANSIENT_NETWORK',
    () => fetch(`http://127.0.0.1:${ports.http}/hangup`));
  await capture('fetch unknown host (fetch failed, getaddrinfo)', 'TRANSIENT_NETWORK',
    () => fetch('http://sidecar-capture.invalid/'));
  await capture('fetch self-signed certificate', 'CONFIG_INVALID_SETTING',
    () => fetch(`https://127.0.0.1:${ports.https}/`));
  await capture('fetch with AbortSignal.timeout (TimeoutError)', 'EXTERNAL_TIMEOUT',
    () => fetch(`http://127.0.0.1:${ports.http}/slow`, { signal: AbortSignal.timeout(200) }),
    { acceptable: ['TRANSIENT_NETWORK'] });
  await capture("fetch('not a url') (TypeError, ERR_INVALID_URL)", 'CONFIG_INVALID_SETTING',
    () => fetch('not a url'), { acceptable: ['PERMANENT_VALIDATION'] });
  await capture('response.json() on a truncated body (SyntaxError)', 'PERMANENT_VALIDATION',
    async () => (await fetch(`http://127.0.0.1:${ports.http}/truncated`)).json(),
    { acceptable: ['EXTERNAL_API_ERROR'] });
  await capture('undici.request headers timeout (UND_ERR_HEADERS_TIMEOUT)', 'EXTERNAL_TIMEOUT',
    () => undici.request(`http://127.0.0.1:${ports.http}/slow`,
      { dispatcher: new undici.Agent({ headersTimeout: 200 }) }));
  await capture('undici.fetch body timeout (UND_ERR_BODY_TIMEOUT)', 'EXTERNAL_TIMEOUT',
    async () => (await undici.fetch(`http://127.0.0.1:${ports.silentHttp}/`,
      { dispatcher: new undici.Agent({ bodyTimeout: 200 }) })).text(),
    { acceptable: ['TRANSIENT_NETWORK'] });
  await capture('undici.request connection refused', 'EXTERNAL_API_DOWN',
    () => undici.request(CLOSED));

  const base = `http://127.0.0.1:${ports.http}`;
  for (const [status, expected] of [[503, 'EXTERNAL_API_DOWN'], [502, 'EXTERNAL_API_DOWN'],
    [504, 'EXTERNAL_TIMEOUT'], [500, 'EXTERNAL_API_ERROR'], [429, 'TRANSIENT_RATE_LIMIT'],
    [401, 'PERMANENT_PERMISSION'], [403, 'PERMANENT_PERMISSION'], [404, 'PERMANENT_NOT_FOUND'],
    [422, 'PERMANENT_VALIDATION'], [400, 'PERMANENT_VALIDATION']]) {
    await capture(`axios ${status}`, expected, () => axios.get(`${base}/status/${status}`),
      { noStatusVariant: true });
  }
  await capture('axios closed port (ECONNREFUSED)', 'EXTERNAL_API_DOWN', () => axios.get(CLOSED));
  await capture('axios socket hang up (ECONNRESET)', 'TRANSIENT_NETWORK',
    () => axios.get(`${base}/hangup`));
  await capture('axios timeout (ECONNABORTED)', 'EXTERNAL_TIMEOUT',
    () => axios.get(`${base}/slow`, { timeout: 200 }));
  await capture('axios timeout with clarifyTimeoutError (ETIMEDOUT)', 'EXTERNAL_TIMEOUT',
    () => axios.get(`${base}/slow`, { timeout: 200, transitional: { clarifyTimeoutError: true } }),
    { acceptable: ['TRANSIENT_NETWORK'] });
  await capture('axios unknown host', 'TRANSIENT_NETWORK',
    () => axios.get('http://sidecar-capture.invalid/'));
  await capture('axios self-signed certificate', 'CONFIG_INVALID_SETTING',
    () => axios.get(`https://127.0.0.1:${ports.https}/`));
}

async function redisFamily(tmp) {
  const plain = await redisServer(tmp, '--enable-debug-command', 'local');
  const locked = await redisServer(tmp, '--requirepass', 'secret');
  const full = await redisServer(tmp, '--maxmemory', '1mb', '--maxmemory-policy', 'noeviction');
  const replica = await redisServer(tmp, '--replicaof', '127.0.0.1', String(plain.port));
  const quiet = (client) => client.on('error', () => {});
  try {
    const down = quiet(new Redis({ port: CLOSED_PORT, lazyConnect: true, retryStrategy: () => null }));
    await capture('ioredis connect to a closed port (ECONNREFUSED)', 'EXTERNAL_API_DOWN',
      () => down.connect(), { acceptable: ['TRANSIENT_NETWORK'] });
    const retrying = quiet(new Redis({ port: CLOSED_PORT, maxRetriesPerRequest: 1,
      retryStrategy: () => 10 }));
    await capture('ioredis MaxRetriesPerRequestError (server down)', 'TRANSIENT_NETWORK',
      () => retrying.get('k'), { acceptable: ['EXTERNAL_API_DOWN'] });
    retrying.disconnect();
    const offline = quiet(new Redis({ port: plain.port, enableOfflineQueue: false,
      lazyConnect: true }));
    await capture("ioredis command while not connected (enableOfflineQueue: false)",
      'TRANSIENT_NETWORK', () => offline.get('k'));
    const client = new Redis({ port: plain.port });
    await client.set('greeting', 'hello');
    await capture('ioredis ReplyError WRONGTYPE', 'PERMANENT_LOGIC',
      () => client.lpush('greeting', 'x'));
    await capture('ioredis ReplyError unknown command', 'PERMANENT_LOGIC',
      () => client.call('NOSUCHCOMMAND'));
    await capture('ioredis ReplyError wrong number of arguments', 'PERMANENT_LOGIC',
      () => client.call('GET'));
    const blocked = quiet(new Redis({ port: plain.port, commandTimeout: 100 }));
    const sleeper = new Redis({ port: plain.port });
    const sleeping = sleeper.call('DEBUG', 'SLEEP', '0.5');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await capture('ioredis commandTimeout (Command timed out)', 'TRANSIENT_NETWORK',
      () => blocked.get('k'));
    await sleeping;
    const noAuth = quiet(new Redis({ port: locked.port }));
    await capture('ioredis NOAUTH (password required)', 'PERMANENT_PERMISSION',
      () => noAuth.get('k'));
    const wrongPass = quiet(new Redis({ port: locked.port, password: 'wrong',
      maxRetriesPerRequest: 1 }));
    await capture('ioredis WRONGPASS', 'PERMANENT_PERMISSION', () => wrongPass.get('k'));
    const fullClient = new Redis({ port: full.port });
    await capture('ioredis OOM command not allowed (maxmemory)', 'SYSTEM_OUT_OF_MEMORY',
      async () => { for (let i = 0; ; i += 1) await fullClient.set(`k${i}`, 'x'.repeat(65536)); });
    const replicaClient = new Redis({ port: replica.port });
    await capture('ioredis READONLY (write to a replica)', 'TRANSIENT_DATABASE',
      () => replicaClient.set('k', 'v'));
    for (const c of [down, offline, client, blocked, sleeper, noAuth, wrongPass, fullClient,
      replicaClient]) c.disconnect();
  } finally {
    for (const s of [plain, locked, full, replica]) s.stop();
  }
}

// A client whose late 'error' events (the scratch database being dropped) are ignored.
function pgClient(config) {
  const client = new pg.Client(config);
  client.on('error', () => {});
  return client;
}

async function postgresFamily() {
  const admin = pgClient({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${SCRATCH_DB}`);
  await admin.query(`DROP ROLE IF EXISTS ${SCRATCH_ROLE}`);
  await admin.query(`CREATE DATABASE ${SCRATCH_DB}`);
  await admin.query(`CREATE ROLE ${SCRATCH_ROLE} LOGIN CONNECTION LIMIT 1`);
  const url = new URL(PG_URL);
  url.pathname = `/${SCRATCH_DB}`;
  const dsn = url.toString();
  const as = (changes) => { const u = new URL(dsn); Object.assign(u, changes); return u.toString(); };
  const db = pgClient({ connectionString: dsn });
  try {
    await db.connect();
    await db.query(`CREATE TABLE customer (id int PRIMARY KEY, email text UNIQUE NOT NULL,
      balance int NOT NULL DEFAULT 0 CHECK (balance >= 0));
      CREATE TABLE invoice (id int PRIMARY KEY, customer_id int REFERENCES customer(id));
      INSERT INTO customer VALUES (1, 'a@example.com'), (2, 'b@example.com');
      GRANT CONNECT ON DATABASE ${SCRATCH_DB} TO ${SCRATCH_ROLE}`);
    const q = (sql, params) => () => db.query(sql, params);
    await capture('pg unique_violation (23505)', 'PERMANENT_VALIDATION',
      q("INSERT INTO customer VALUES (3, 'a@example.com')"));
    await capture('pg foreign_key_violation (23503)', 'PERMANENT_VALIDATION',
      q('INSERT INTO invoice VALUES (1, 42)'));
    await capture('pg not_null_violation (23502)', 'PERMANENT_VALIDATION',
      q('INSERT INTO customer (id) VALUES (4)'));
    await capture('pg check_violation (23514)', 'PERMANENT_VALIDATION',
      q('UPDATE customer SET balance = -1 WHERE id = 1'));
    await capture('pg invalid_text_representation (22P02)', 'PERMANENT_VALIDATION',
      q('SELECT $1::int', ['abc']));
    await capture('pg invalid_datetime_format (22007)', 'PERMANENT_VALIDATION',
      q("SELECT 'next tuesday'::date"));
    await capture('pg division_by_zero (22012)', 'PERMANENT_VALIDATION', q('SELECT 1/0'));
    await capture('pg undefined_table (42P01)', 'PERMANENT_LOGIC', q('SELECT * FROM orders'));
    await capture('pg undefined_column (42703)', 'PERMANENT_LOGIC',
      q('SELECT nickname FROM customer'));
    await capture('pg syntax_error (42601)', 'PERMANENT_LOGIC', q('SELEC 1'));
    await capture('pg bind message parameter count (08P01)', 'PERMANENT_LOGIC',
      q('SELECT $1::int + $2::int', [1]));
    await capture('pg statement_timeout (57014)', 'TRANSIENT_DATABASE',
      async () => { await db.query("SET statement_timeout = '100ms'");
        try { await db.query('SELECT pg_sleep(2)'); } finally { await db.query('RESET statement_timeout'); } });
    await capture('pg deadlock_detected (40P01)', 'TRANSIENT_DATABASE', () => deadlock(dsn));
    await capture('pg serialization_failure (40001)', 'TRANSIENT_DATABASE',
      () => serializationFailure(dsn));
    await capture('pg lock_not_available (55P03)', 'TRANSIENT_DATABASE', () => lockTimeout(dsn));
    await capture('pg admin_shutdown (57P01, backend terminated)', 'TRANSIENT_DATABASE',
      () => terminated(dsn, admin));
    await capture('pg query after the connection was terminated', 'TRANSIENT_DATABASE',
      () => terminated(dsn, admin, true));
    await capture('pg too many connections for role (53300)', 'TRANSIENT_DATABASE',
      async () => {
        const first = pgClient({ connectionString: as({ username: SCRATCH_ROLE }) });
        const second = pgClient({ connectionString: as({ username: SCRATCH_ROLE }) });
        await first.connect();
        try { await second.connect(); } finally { await first.end(); }
      });
    await capture('pg insufficient_privilege (42501)', 'PERMANENT_PERMISSION', async () => {
      const c = pgClient({ connectionString: as({ username: SCRATCH_ROLE }) });
      await c.connect();
      try { await c.query('SELECT * FROM customer'); } finally { await c.end(); }
    });
    await capture('pg role does not exist (28000)', 'PERMANENT_PERMISSION', async () => {
      const c = pgClient({ connectionString: as({ username: 'no_such_role' }) });
      await c.connect();
    });
    await capture('pg database does not exist (3D000)', 'CONFIG_INVALID_SETTING', async () => {
      const c = pgClient({ connectionString: as({ pathname: '/no_such_db' }) });
      await c.connect();
    });
    await capture('pg connect to a closed port (ECONNREFUSED)', 'TRANSIENT_DATABASE', async () => {
      const c = pgClient({ host: '127.0.0.1', port: CLOSED_PORT, user: 'x', database: 'x' });
      await c.connect();
    }, { acceptable: ['EXTERNAL_API_DOWN'] });
    await capture('pg.Pool connection timeout (pool exhausted)', 'TRANSIENT_DATABASE', async () => {
      const pool = new pg.Pool({ connectionString: dsn, max: 1, connectionTimeoutMillis: 100 });
      pool.on('error', () => {});
      const held = await pool.connect();
      try { await pool.connect(); } finally { held.release(); await pool.end(); }
    });
  } finally {
    await db.end().catch(() => {});
    await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`,
      [SCRATCH_DB]);
    await admin.query(`DROP DATABASE IF EXISTS ${SCRATCH_DB}`);
    await admin.query(`DROP ROLE IF EXISTS ${SCRATCH_ROLE}`);
    await admin.end();
  }
}

async function pair(dsn) {
  const a = pgClient({ connectionString: dsn });
  const b = pgClient({ connectionString: dsn });
  await a.connect();
  await b.connect();
  return [a, b];
}

async function deadlock(dsn) {
  const [a, b] = await pair(dsn);
  try {
    await a.query("BEGIN; SET LOCAL deadlock_timeout = '100ms'");
    await b.query("BEGIN; SET LOCAL deadlock_timeout = '100ms'");
    await a.query('UPDATE customer SET balance = balance + 1 WHERE id = 1');
    await b.query('UPDATE customer SET balance = balance + 1 WHERE id = 2');
    const first = a.query('UPDATE customer SET balance = balance + 1 WHERE id = 2');
    const second = b.query('UPDATE customer SET balance = balance + 1 WHERE id = 1');
    const results = await Promise.allSettled([first, second]);
    const failed = results.find((r) => r.status === 'rejected');
    assert(failed, 'no deadlock');
    throw failed.reason;
  } finally {
    await a.query('ROLLBACK').catch(() => {});
    await b.query('ROLLBACK').catch(() => {});
    await a.end();
    await b.end();
  }
}

async function serializationFailure(dsn) {
  const [a, b] = await pair(dsn);
  try {
    await a.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await a.query('SELECT balance FROM customer WHERE id = 1');
    await b.query('UPDATE customer SET balance = balance + 1 WHERE id = 1');
    await a.query('UPDATE customer SET balance = balance + 1 WHERE id = 1');
  } finally {
    await a.query('ROLLBACK').catch(() => {});
    await a.end();
    await b.end();
  }
}

async function lockTimeout(dsn) {
  const [a, b] = await pair(dsn);
  try {
    await a.query('BEGIN');
    await a.query('SELECT * FROM customer WHERE id = 1 FOR UPDATE');
    await b.query("SET lock_timeout = '100ms'");
    await b.query('SELECT * FROM customer WHERE id = 1 FOR UPDATE');
  } finally {
    await a.query('ROLLBACK').catch(() => {});
    await a.end();
    await b.end();
  }
}

async function terminated(dsn, admin, again = false) {
  const victim = pgClient({ connectionString: dsn });
  victim.on('error', () => {});
  await victim.connect();
  const pid = (await victim.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  if (!again) {
    const running = victim.query('SELECT pg_sleep(5)');
    await new Promise((resolve) => setTimeout(resolve, 100));
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await running;
    return;
  }
  await admin.query('SELECT pg_terminate_backend($1)', [pid]);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await victim.query('SELECT 1');
}

async function main() {
  const probe = net.createServer();
  CLOSED_PORT = await listen(probe);
  await new Promise((resolve) => probe.close(resolve));
  CLOSED = `http://127.0.0.1:${CLOSED_PORT}/`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'capture-node-'));
  const tls = selfSigned(tmp);
  const statusHttp = statusServer();
  const tlsServer = https.createServer(tls, (req, res) => { res.writeHead(200); res.end('{}'); });
  const silentHttp = http.createServer((req, res) => { res.writeHead(200); res.write('{'); });
  const servers = [statusHttp, tlsServer, silentHttp];
  const tcp = { reset: await tcpServer('reset'), close: await tcpServer('close') };
  const ports = {
    http: await listen(statusHttp), https: await listen(tlsServer),
    silentHttp: await listen(silentHttp), reset: tcp.reset.port, close: tcp.close.port,
  };
  try {
    await core(ports, tmp);
    await httpFamily(ports, tls);
    await redisFamily(tmp);
    await postgresFamily();
  } finally {
    servers.forEach((s) => { s.closeAllConnections?.(); s.close(); });
    Object.values(tcp).forEach((s) => s.close());
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.stderr.write(`node ${process.version}: ${cases.size} cases\n`);
  process.exit(0);
}

main().catch((error) => { process.stderr.write(`${error.stack}\n`); process.exit(1); });
