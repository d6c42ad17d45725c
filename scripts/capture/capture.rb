# Real exceptions of Ruby's standard library, ruby-pg, ActiveRecord and redis-rb, in the
# wire shape a Ruby worker sends (docs/workers.md, "Ruby"). Prints one JSON row a line:
#   {"case", "expected", "acceptable"?, "exception"}
# Run through scripts/capture/capture-other.py, which writes tests/data/exceptions-other.jsonl.
# Debian packages: ruby, ruby-pg, ruby-redis, ruby-activerecord.
#
# Provoked for real: throw-away TCP/HTTP/TLS servers on 127.0.0.1, a closed port,
# /dev/full, private redis-server processes, and a scratch database and role on the
# PostgreSQL at $CAPTURE_PG_URL (default postgresql://postgres@127.0.0.1:5432/test;
# dropped at the end).

require "active_record"
require "date"
require "json"
require "net/http"
require "openssl"
require "pg"
require "redis"
require "socket"
require "timeout"
require "tmpdir"

PG_URL = ENV.fetch("CAPTURE_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCRATCH_DB = "sidecar_capture_ruby"
SCRATCH_ROLE = "sidecar_capture_ruby_role"
CASES = {}

# --- wire shape -----------------------------------------------------------------------------

def causes(error)
  chain = []
  while error && chain.size < 5
    chain << error
    error = error.cause
  end
  chain
end

# The `exception` object: the class, its superclasses (modules left out) as `mro`, the
# message with its causes' messages (when not already in it), SystemCallError#errno, the
# Errno name as `code`, or the SQLSTATE of a PG::Error anywhere in the cause chain.
def wire(error, status: nil)
  mro = error.class.ancestors.select { |c| c.is_a?(Class) } - [Object, BasicObject]
  message = ""
  code = nil
  causes(error).each do |e|
    text = e.message.to_s
    message = message.empty? ? text : "#{message}: #{text}" unless text.empty? || message.include?(text)
    if code.nil? && e.is_a?(PG::Error) && e.result
      code = e.result.error_field(PG::PG_DIAG_SQLSTATE)
    end
    code = e.class.name.split("::").last if code.nil? && e.is_a?(SystemCallError) && e.class.name.start_with?("Errno::")
  end
  if status.nil? && error.respond_to?(:response) && error.response.respond_to?(:code)
    status = error.response.code.to_i
  end
  {
    "type" => error.class.name, "module" => nil, "mro" => mro.map(&:name),
    "message" => message[0, 500], "errno" => (error.errno if error.is_a?(SystemCallError)),
    "http_status" => status, "code" => code, "language" => "ruby",
  }
end

def record(name, expected, error, acceptable: nil, **wire_options)
  raise "duplicate case #{name}" if CASES[name]
  CASES[name] = true
  row = { "case" => name, "expected" => expected, "exception" => wire(error, **wire_options) }
  row["acceptable"] = acceptable if acceptable
  yield row["exception"] if block_given?
  puts JSON.generate(row)
end

def capture(name, expected, acceptable: nil, no_status: false, no_code: false)
  yield
rescue Exception => error # rubocop:disable Lint/RescueException -- NoMemoryError, SystemStackError
  record(name, expected, error, acceptable: acceptable)
  record("#{name} (no status)", expected, error, acceptable: acceptable) { |w| w["http_status"] = nil } if no_status
  record("#{name} (no code)", expected, error, acceptable: acceptable) { |w| w["code"] = nil } if no_code
else
  raise "#{name}: nothing was raised"
end

# --- throw-away servers ---------------------------------------------------------------------

def free_port
  server = TCPServer.new("127.0.0.1", 0)
  server.addr[1]
ensure
  server.close
end

def tcp_server(behaviour)
  server = TCPServer.new("127.0.0.1", 0)
  kept = []
  Thread.new do
    loop do
      client = server.accept
      case behaviour
      when :reset
        client.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack("ii"))
        sleep 0.05
        client.close
      when :close # read what the client sent first, so closing is a FIN, not a reset
        begin
          client.readpartial(4096)
        rescue IOError, SystemCallError
          nil
        end
        client.close
      when :http then Thread.new(client) { |c| http_answer(c) }
      else kept << client
      end
    end
  end
  server.addr[1]
end

def http_answer(client)
  if client.recv(1, Socket::MSG_PEEK) == "\x16" # a TLS ClientHello: answer in plain HTTP
    client.write("HTTP/1.1 400 Bad Request\r\n\r\n")
    return client.close
  end
  line = client.gets.to_s
  while (header = client.gets) && header != "\r\n"; end
  status = line[%r{/status/(\d{3})}, 1] || "200"
  body = '{"error": "x"}'
  client.write("HTTP/1.1 #{status} X\r\nContent-Type: application/json\r\n" \
               "Content-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}")
  client.close
rescue IOError, SystemCallError
  nil
end

def tls_server
  key = OpenSSL::PKey::RSA.new(2048)
  cert = OpenSSL::X509::Certificate.new
  cert.version = 2
  cert.serial = 1
  cert.subject = cert.issuer = OpenSSL::X509::Name.parse("/CN=localhost")
  cert.public_key = key.public_key
  cert.not_before = Time.now - 60
  cert.not_after = Time.now + 3600
  cert.sign(key, OpenSSL::Digest.new("SHA256"))
  context = OpenSSL::SSL::SSLContext.new
  context.cert = cert
  context.key = key
  tcp = TCPServer.new("127.0.0.1", 0)
  server = OpenSSL::SSL::SSLServer.new(tcp, context)
  Thread.new do
    loop do
      begin
        client = server.accept
        client.close
      rescue OpenSSL::SSL::SSLError, IOError, SystemCallError
        nil
      end
    end
  end
  tcp.addr[1]
end

def redis_server(dir, *extra)
  port = free_port
  pid = spawn("redis-server", "--port", port.to_s, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--dir", dir, *extra, out: File::NULL, err: File::NULL)
  deadline = Time.now + 10
  begin
    TCPSocket.new("127.0.0.1", port).close
  rescue SystemCallError
    raise "redis-server did not start" if Time.now > deadline
    sleep 0.05
    retry
  end
  [port, pid]
end

# --- families -------------------------------------------------------------------------------

def net_family(closed, ports)
  capture("TCPSocket to a closed port (Errno::ECONNREFUSED)", "EXTERNAL_API_DOWN") { TCPSocket.new("127.0.0.1", closed) }
  capture("read after a reset (Errno::ECONNRESET)", "TRANSIENT_NETWORK") do
    s = TCPSocket.new("127.0.0.1", ports[:reset])
    s.write("x")
    s.readpartial(1)
  end
  capture("write after the peer closed (Errno::EPIPE)", "TRANSIENT_NETWORK") do
    s = TCPSocket.new("127.0.0.1", ports[:close])
    s.write("x")
    sleep 0.1
    1000.times do
      s.write("x" * 65_536)
      sleep 0.005
    end
  end
  capture("getaddrinfo unknown host (SocketError)", "TRANSIENT_NETWORK") { Addrinfo.getaddrinfo("sidecar-capture.invalid", 80) }
  capture("Timeout.timeout (Timeout::Error)", "TRANSIENT_NETWORK", acceptable: ["EXTERNAL_TIMEOUT"]) { Timeout.timeout(0.1) { sleep 1 } }

  http = ->(port, path, **opts) { Net::HTTP.start("127.0.0.1", port, **opts) { |h| h.request_get(path).value } }
  capture("Net::HTTP closed port (Errno::ECONNREFUSED)", "EXTERNAL_API_DOWN") { http.call(closed, "/") }
  capture("Net::HTTP read timeout (Net::ReadTimeout)", "EXTERNAL_TIMEOUT") { http.call(ports[:silent], "/", read_timeout: 0.2) }
  capture("Net::HTTP server hangs up (EOFError)", "TRANSIENT_NETWORK") { http.call(ports[:close], "/") }
  capture("Net::HTTP self-signed certificate (OpenSSL::SSL::SSLError)", "CONFIG_INVALID_SETTING") { http.call(ports[:tls], "/", use_ssl: true) }
  capture("Net::HTTP TLS to a plain HTTP port (OpenSSL::SSL::SSLError)", "CONFIG_INVALID_SETTING") { http.call(ports[:http], "/", use_ssl: true) }
  capture("Net::HTTP unknown host (SocketError)", "TRANSIENT_NETWORK") { Net::HTTP.get(URI("http://sidecar-capture.invalid/")) }
  [[503, "EXTERNAL_API_DOWN"], [502, "EXTERNAL_API_DOWN"], [504, "EXTERNAL_TIMEOUT"],
   [500, "EXTERNAL_API_ERROR"], [429, "TRANSIENT_RATE_LIMIT"], [401, "PERMANENT_PERMISSION"],
   [403, "PERMANENT_PERMISSION"], [404, "PERMANENT_NOT_FOUND"], [422, "PERMANENT_VALIDATION"],
   [400, "PERMANENT_VALIDATION"]].each do |status, expected|
    capture("Net::HTTPResponse#value #{status}", expected, no_status: true) { http.call(ports[:http], "/status/#{status}") }
  end
  capture("URI('http://exa mple.com') (URI::InvalidURIError)", "PERMANENT_VALIDATION", acceptable: ["CONFIG_INVALID_SETTING"]) { URI("http://exa mple.com") }
end

def files_family(tmp)
  capture("File.read missing file (Errno::ENOENT)", "PERMANENT_NOT_FOUND") { File.read(File.join(tmp, "missing", "report.csv")) }
  file = File.join(tmp, "a.txt")
  File.write(file, "x")
  capture("Dir.children of a file (Errno::ENOTDIR)", "PERMANENT_NOT_FOUND") { Dir.children(file) }
  capture("File.write to /dev/full (Errno::ENOSPC)", "SYSTEM_DISK_FULL") { File.write("/dev/full", "x" * 10_000) }
  noexec = File.join(tmp, "not-executable.sh")
  File.write(noexec, "#!/bin/sh\n")
  File.chmod(0o600, noexec)
  capture("spawn a non-executable file (Errno::EACCES)", "PERMANENT_PERMISSION") { Process.wait(spawn(noexec)) }
  capture("spawn a missing program (Errno::ENOENT)", "CONFIG_MISSING_SERVICE", acceptable: ["PERMANENT_NOT_FOUND"]) { spawn("sidecar-capture-no-such-tool") }
end

def depth(n)
  depth(n + 1) + 1
end

def lang_family
  capture("Integer('abc') (ArgumentError)", "PERMANENT_VALIDATION") { Integer("abc") }
  capture("Float('12,50') (ArgumentError)", "PERMANENT_VALIDATION") { Float("12,50") }
  capture("Date.parse('nope') (Date::Error)", "PERMANENT_VALIDATION") { Date.parse("nope") }
  capture("JSON.parse('{') (JSON::ParserError)", "PERMANENT_VALIDATION") { JSON.parse("{") }
  capture("wrong number of arguments (ArgumentError)", "PERMANENT_LOGIC") { ->(a, b) { a }.call(1) }
  capture("missing keyword (ArgumentError)", "PERMANENT_LOGIC") { ->(amount:) { amount }.call }
  capture("undefined method for nil (NoMethodError)", "PERMANENT_LOGIC") { nil.id }
  capture("undefined local variable (NameError)", "PERMANENT_LOGIC") { eval("total_amount") }
  capture("1 / 0 (ZeroDivisionError)", "PERMANENT_LOGIC") { 1 / 0 }
  capture("Hash#fetch missing key (KeyError)", "PERMANENT_LOGIC") { { id: 1 }.fetch(:user_id) }
  capture("ENV.fetch missing variable (KeyError)", "CONFIG_MISSING_SETTING") { ENV.fetch("SIDECAR_CAPTURE_API_TOKEN") }
  capture("no implicit conversion (TypeError)", "PERMANENT_LOGIC") { "total: " + 5 }
  capture("modify a frozen string (FrozenError)", "PERMANENT_LOGIC") { "x".freeze << "y" }
  capture("unbounded recursion (SystemStackError)", "PERMANENT_LOGIC") { depth(0) }
  capture("huge allocation (NoMemoryError)", "SYSTEM_OUT_OF_MEMORY") { "x" * (2**40) }
  capture("require a missing gem (LoadError)", "CONFIG_MISSING_SERVICE") { require "sidecar_capture_no_such_gem" }
end

def pg_family(dsn, admin, closed)
  db = PG.connect(dsn)
  db.exec("CREATE TABLE customer (id int PRIMARY KEY, email text UNIQUE NOT NULL, balance int NOT NULL DEFAULT 0)")
  db.exec("INSERT INTO customer VALUES (1, 'a@example.com'), (2, 'b@example.com')")
  db.exec("GRANT CONNECT ON DATABASE #{SCRATCH_DB} TO #{SCRATCH_ROLE}")
  capture("PG::UniqueViolation (23505)", "PERMANENT_VALIDATION") { db.exec("INSERT INTO customer VALUES (3, 'a@example.com')") }
  capture("PG::InvalidTextRepresentation (22P02)", "PERMANENT_VALIDATION") { db.exec("SELECT 'abc'::int") }
  capture("PG::UndefinedTable (42P01)", "PERMANENT_LOGIC") { db.exec("SELECT * FROM orders") }
  capture("PG::QueryCanceled statement timeout (57014)", "TRANSIENT_DATABASE") do
    db.exec("SET statement_timeout = '100ms'")
    db.exec("SELECT pg_sleep(2)")
  ensure
    db.exec("RESET statement_timeout")
  end
  capture("PG::TRDeadlockDetected (40P01)", "TRANSIENT_DATABASE") { deadlock(-> { PG.connect(dsn) }) { |c, sql| c.exec(sql) } }
  capture("PG::ConnectionBad connection refused", "TRANSIENT_DATABASE", acceptable: ["EXTERNAL_API_DOWN"]) { PG.connect(host: "127.0.0.1", port: closed, user: "x", dbname: "x") }
  capture("PG::ConnectionBad role does not exist", "PERMANENT_PERMISSION") { PG.connect(dsn, user: "no_such_role") }
  capture("PG::ConnectionBad database does not exist", "CONFIG_INVALID_SETTING") { PG.connect(dsn, dbname: "no_such_db") }
  capture("PG::ConnectionBad too many connections for role", "TRANSIENT_DATABASE") do
    first = PG.connect(dsn, user: SCRATCH_ROLE)
    begin
      PG.connect(dsn, user: SCRATCH_ROLE)
    ensure
      first.close
    end
  end
  capture("PG::InsufficientPrivilege (42501)", "PERMANENT_PERMISSION") do
    c = PG.connect(dsn, user: SCRATCH_ROLE)
    begin
      c.exec("SELECT * FROM customer")
    ensure
      c.close
    end
  end
  victim = PG.connect(dsn)
  admin.exec("SELECT pg_terminate_backend(#{victim.backend_pid})")
  sleep 0.2
  capture("PG query on a terminated backend", "TRANSIENT_DATABASE") { victim.exec("SELECT 1") }
  capture("PG query on the closed connection", "TRANSIENT_DATABASE") { victim.exec("SELECT 1") }
  db.close
end

def deadlock(connect)
  a = connect.call
  b = connect.call
  [a, b].each { |c| yield c, "BEGIN"; yield c, "SET LOCAL deadlock_timeout = '100ms'" }
  yield a, "UPDATE customer SET balance = balance + 1 WHERE id = 1"
  yield b, "UPDATE customer SET balance = balance + 1 WHERE id = 2"
  threads = [[a, 2], [b, 1]].map do |c, id|
    Thread.new { Thread.current.report_on_exception = false; yield c, "UPDATE customer SET balance = balance + 1 WHERE id = #{id}"; nil }
  end
  errors = threads.map do |t|
    t.value
  rescue StandardError => e
    e
  end
  raise errors.compact.first || "no deadlock"
ensure
  [a, b].compact.each do |c|
    yield c, "ROLLBACK"
  rescue StandardError
    nil
  end
end

class Customer < ActiveRecord::Base
  self.table_name = "customer"
  validates :email, presence: true
end

def active_record_family(dsn, closed)
  ActiveRecord::Base.establish_connection(dsn)
  capture("ActiveRecord::RecordNotFound", "PERMANENT_NOT_FOUND") { Customer.find(999) }
  capture("ActiveRecord::RecordInvalid", "PERMANENT_VALIDATION") { Customer.create!(id: 7, email: "") }
  capture("ActiveRecord::RecordNotUnique (23505)", "PERMANENT_VALIDATION", no_code: true) { Customer.create!(id: 8, email: "a@example.com") }
  capture("ActiveRecord::StatementInvalid undefined table (42P01)", "PERMANENT_LOGIC") { ActiveRecord::Base.connection.execute("SELECT * FROM orders") }
  capture("ActiveRecord::Deadlocked (40P01)", "TRANSIENT_DATABASE", no_code: true) do
    pool = ActiveRecord::Base.connection_pool
    deadlock(-> { pool.checkout }) { |c, sql| c.execute(sql) }
  end
  capture("ActiveRecord::QueryCanceled statement timeout (57014)", "TRANSIENT_DATABASE", no_code: true) do
    Customer.transaction do
      Customer.connection.execute("SET LOCAL statement_timeout = '100ms'")
      Customer.connection.execute("SELECT pg_sleep(2)")
    end
  end
  capture("ActiveRecord::LockWaitTimeout (55P03)", "TRANSIENT_DATABASE", no_code: true) do
    holder = PG.connect(dsn)
    holder.exec("BEGIN")
    holder.exec("SELECT * FROM customer WHERE id = 1 FOR UPDATE")
    begin
      Customer.transaction do
        Customer.connection.execute("SET LOCAL lock_timeout = '100ms'")
        Customer.lock.find(1)
      end
    ensure
      holder.close
    end
  end
  capture("ActiveRecord::ConnectionNotEstablished (connection refused)", "TRANSIENT_DATABASE", acceptable: ["EXTERNAL_API_DOWN"]) do
    ActiveRecord::Base.establish_connection(adapter: "postgresql", host: "127.0.0.1", port: closed, database: "x", username: "x")
    ActiveRecord::Base.connection
  end
  ActiveRecord::Base.remove_connection
end

def redis_family(tmp, closed)
  plain, plain_pid = redis_server(tmp, "--enable-debug-command", "local")
  locked, locked_pid = redis_server(tmp, "--requirepass", "secret")
  full, full_pid = redis_server(tmp, "--maxmemory", "1mb", "--maxmemory-policy", "noeviction")
  replica, replica_pid = redis_server(tmp, "--replicaof", "127.0.0.1", plain.to_s)
  capture("Redis::CannotConnectError (connection refused)", "EXTERNAL_API_DOWN", acceptable: ["TRANSIENT_NETWORK"]) { Redis.new(port: closed, reconnect_attempts: 0).get("k") }
  client = Redis.new(port: plain)
  client.set("greeting", "hello")
  capture("Redis::CommandError WRONGTYPE", "PERMANENT_LOGIC") { client.lpush("greeting", "x") }
  capture("Redis::CommandError unknown command", "PERMANENT_LOGIC") { client.call("NOSUCHCOMMAND") }
  sleeper = Thread.new { Redis.new(port: plain).call("DEBUG", "SLEEP", "1") }
  sleep 0.3
  capture("Redis::TimeoutError (read timeout)", "TRANSIENT_NETWORK") { Redis.new(port: plain, read_timeout: 0.1, reconnect_attempts: 0).get("k") }
  sleeper.join
  capture("Redis::CommandError NOAUTH", "PERMANENT_PERMISSION") { Redis.new(port: locked).get("k") }
  capture("Redis::CommandError WRONGPASS", "PERMANENT_PERMISSION") { Redis.new(port: locked, password: "wrong").get("k") }
  capture("Redis::CommandError OOM (maxmemory)", "SYSTEM_OUT_OF_MEMORY") do
    c = Redis.new(port: full)
    (0..).each { |i| c.set("k#{i}", "x" * 65_536) }
  end
  capture("Redis::CommandError READONLY (write to a replica)", "TRANSIENT_DATABASE") { Redis.new(port: replica).set("k", "v") }
ensure
  [plain_pid, locked_pid, full_pid, replica_pid].compact.each do |pid|
    Process.kill("TERM", pid)
    Process.wait(pid)
  end
end

def main
  closed = free_port
  ports = { silent: tcp_server(:silent), reset: tcp_server(:reset), close: tcp_server(:close),
            http: tcp_server(:http), tls: tls_server }
  Dir.mktmpdir("capture-ruby-") do |tmp|
    net_family(closed, ports)
    files_family(tmp)
    lang_family
    admin = PG.connect(PG_URL)
    admin.exec("DROP DATABASE IF EXISTS #{SCRATCH_DB}")
    admin.exec("DROP ROLE IF EXISTS #{SCRATCH_ROLE}")
    admin.exec("CREATE DATABASE #{SCRATCH_DB}")
    admin.exec("CREATE ROLE #{SCRATCH_ROLE} LOGIN CONNECTION LIMIT 1")
    dsn = PG_URL.sub(%r{/[^/]*\z}, "/#{SCRATCH_DB}")
    begin
      pg_family(dsn, admin, closed)
      active_record_family(dsn, closed)
    ensure
      admin.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '#{SCRATCH_DB}'")
      admin.exec("DROP DATABASE IF EXISTS #{SCRATCH_DB}")
      admin.exec("DROP ROLE IF EXISTS #{SCRATCH_ROLE}")
    end
    redis_family(tmp, closed)
  end
  warn "ruby #{RUBY_VERSION}: #{CASES.size} cases"
end

main
