// Real exceptions of the JDK and the JDBC drivers a Java worker uses, in the wire shape a
// worker sends (docs/workers.md, "Java"). Prints one JSON row a line:
//   {"case", "expected", "acceptable"?, "exception"}
// Run through scripts/capture/capture-other.py (it compiles this file against Debian's
// PostgreSQL JDBC driver and HSQLDB), which writes tests/data/exceptions-other.jsonl.
//
// Provoked for real: throw-away TCP/HTTP/TLS servers on 127.0.0.1, a closed port,
// /dev/full, the PostgreSQL at $CAPTURE_PG_JDBC (default jdbc:postgresql://127.0.0.1:5432/test,
// user postgres, no password; a scratch database and role are made and dropped), and an
// in-memory HSQLDB, which throws the java.sql SQLTransient*/SQLNonTransient* subclasses.

import java.io.*;
import java.net.*;
import java.net.http.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.sql.*;
import java.time.Duration;
import java.time.LocalDate;
import java.util.*;
import java.util.concurrent.*;
import javax.net.ssl.*;

public class Capture {
    static final Set<String> CASES = new HashSet<>();
    static final String PG = System.getenv().getOrDefault(
        "CAPTURE_PG_JDBC", "jdbc:postgresql://127.0.0.1:5432/test");
    static final String SCRATCH_DB = "sidecar_capture_java";
    static final String SCRATCH_ROLE = "sidecar_capture_java_role";
    static int closedPort;

    interface Action { void run() throws Throwable; }

    // --- wire shape (what a Java worker sends) ---------------------------------------------

    static String json(String s) {
        if (s == null) return "null";
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                default:
                    if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
                    else out.append(c);
            }
        }
        return out.append('"').toString();
    }

    static String list(List<String> items) {
        StringJoiner out = new StringJoiner(", ", "[", "]");
        for (String item : items) out.add(json(item));
        return out.toString();
    }

    /** The `exception` object: the class, its superclasses up to Throwable, the message with
     *  the messages of its causes, the first SQLState in the cause chain as `code`. */
    static String wire(Throwable error, Integer httpStatus) {
        List<String> mro = new ArrayList<>();
        for (Class<?> c = error.getClass(); c != null && c != Object.class; c = c.getSuperclass()) {
            mro.add(c.getName());
        }
        List<String> messages = new ArrayList<>();
        String code = null;
        int depth = 0;
        for (Throwable t = error; t != null && depth < 5; t = t.getCause(), depth++) {
            if (code == null && t instanceof SQLException && ((SQLException) t).getSQLState() != null) {
                code = ((SQLException) t).getSQLState();
            }
            String text = t.getMessage();
            if (text != null && !text.isEmpty() && !messages.contains(text)) messages.add(text);
        }
        String message = String.join(": ", messages);
        if (message.length() > 500) message = message.substring(0, 500);
        Package pkg = error.getClass().getPackage();
        return "{\"type\": " + json(error.getClass().getSimpleName())
            + ", \"module\": " + json(pkg == null ? null : pkg.getName())
            + ", \"mro\": " + list(mro)
            + ", \"message\": " + json(message)
            + ", \"errno\": null, \"http_status\": " + httpStatus
            + ", \"code\": " + json(code) + ", \"language\": \"java\"}";
    }

    static void record(String name, String expected, Throwable error, Integer status,
                       String... acceptable) {
        if (!CASES.add(name)) throw new IllegalStateException("duplicate case " + name);
        String row = "{\"case\": " + json(name) + ", \"expected\": " + json(expected);
        if (acceptable.length > 0) row += ", \"acceptable\": " + list(Arrays.asList(acceptable));
        System.out.println(row + ", \"exception\": " + wire(error, status) + "}");
    }

    static void capture(String name, String expected, Action action, String... acceptable) {
        try {
            action.run();
        } catch (Throwable error) {
            record(name, expected, error, null, acceptable);
            return;
        }
        throw new IllegalStateException(name + ": nothing was thrown");
    }

    // --- throw-away servers ---------------------------------------------------------------

    static ServerSocket server(String behaviour) throws IOException {
        ServerSocket server = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        List<Socket> kept = Collections.synchronizedList(new ArrayList<>());
        Thread thread = new Thread(() -> {
            while (true) {
                try {
                    Socket s = server.accept();
                    if (behaviour.equals("reset")) {
                        s.setSoLinger(true, 0);
                        Thread.sleep(50);
                        s.close();
                    } else if (behaviour.equals("close")) {
                        s.close();
                    } else if (behaviour.equals("http")) {
                        new Thread(() -> http(s)).start();
                    } else {
                        kept.add(s);
                    }
                } catch (Exception e) {
                    return;
                }
            }
        });
        thread.setDaemon(true);
        thread.start();
        return server;
    }

    /** GET /status/NNN answers that status. */
    static void http(Socket s) {
        try (s) {
            s.setSoTimeout(5000);
            PushbackInputStream raw = new PushbackInputStream(s.getInputStream());
            int first = raw.read();
            if (first == 0x16) { // a TLS ClientHello: answer in plain HTTP, as a real server does
                s.getOutputStream().write("HTTP/1.1 400 Bad Request\r\n\r\n".getBytes());
                return;
            }
            raw.unread(first);
            BufferedReader in = new BufferedReader(new InputStreamReader(raw));
            String line = in.readLine();
            while (true) {
                String header = in.readLine();
                if (header == null || header.isEmpty()) break;
            }
            String[] parts = line.split(" ")[1].split("/");
            int status = parts.length > 2 ? Integer.parseInt(parts[2]) : 200;
            byte[] body = "{\"error\": \"x\"}".getBytes(StandardCharsets.UTF_8);
            OutputStream out = s.getOutputStream();
            out.write(("HTTP/1.1 " + status + " X\r\nContent-Type: application/json\r\n"
                + "Content-Length: " + body.length + "\r\nConnection: close\r\n\r\n")
                .getBytes(StandardCharsets.US_ASCII));
            out.write(body);
            out.flush();
        } catch (IOException ignored) {
        }
    }

    static SSLServerSocket tlsServer(Path dir) throws Exception {
        Path store = dir.resolve("server.p12");
        Process keytool = new ProcessBuilder("keytool", "-genkeypair", "-alias", "s", "-keyalg",
            "RSA", "-dname", "CN=localhost", "-validity", "1", "-storetype", "PKCS12",
            "-keystore", store.toString(), "-storepass", "secret1", "-keypass", "secret1")
            .redirectErrorStream(true).start();
        keytool.getInputStream().readAllBytes();
        if (keytool.waitFor() != 0) throw new IllegalStateException("keytool failed");
        java.security.KeyStore ks = java.security.KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(store)) {
            ks.load(in, "secret1".toCharArray());
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("SunX509");
        kmf.init(ks, "secret1".toCharArray());
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(kmf.getKeyManagers(), null, null);
        SSLServerSocket server = (SSLServerSocket) context.getServerSocketFactory()
            .createServerSocket(0, 50, InetAddress.getLoopbackAddress());
        Thread thread = new Thread(() -> {
            while (true) {
                try {
                    Socket s = server.accept();
                    new Thread(() -> {
                        try (s) {
                            ((SSLSocket) s).startHandshake();
                        } catch (IOException ignored) {
                        }
                    }).start();
                } catch (IOException e) {
                    return;
                }
            }
        });
        thread.setDaemon(true);
        thread.start();
        return server;
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    // --- families -------------------------------------------------------------------------

    static void net(int silent, int reset, int close, int httpPort, int tlsPort) throws Exception {
        capture("Socket connect to a closed port (ConnectException)", "EXTERNAL_API_DOWN",
            () -> new Socket("127.0.0.1", closedPort).close());
        capture("Socket read timeout (SocketTimeoutException)", "EXTERNAL_TIMEOUT", () -> {
            try (Socket s = new Socket("127.0.0.1", silent)) {
                s.setSoTimeout(200);
                s.getInputStream().read();
            }
        }, "TRANSIENT_NETWORK");
        capture("Socket read after a reset (Connection reset)", "TRANSIENT_NETWORK", () -> {
            try (Socket s = new Socket("127.0.0.1", reset)) {
                s.getOutputStream().write(1);
                s.getInputStream().read();
            }
        });
        capture("Socket write after the peer closed (Broken pipe)", "TRANSIENT_NETWORK", () -> {
            try (Socket s = new Socket("127.0.0.1", close)) {
                Thread.sleep(100);
                OutputStream out = s.getOutputStream();
                for (int i = 0; i < 1000; i++) {
                    out.write(new byte[65536]);
                    Thread.sleep(5);
                }
            }
        });
        capture("InetAddress.getByName unknown host (UnknownHostException)", "TRANSIENT_NETWORK",
            () -> InetAddress.getByName("sidecar-capture.invalid"));
        capture("new URL('not a url') (MalformedURLException)", "PERMANENT_VALIDATION",
            () -> new URL("not a url"), "CONFIG_INVALID_SETTING");
        capture("new URI with a space (URISyntaxException)", "PERMANENT_VALIDATION",
            () -> new URI("http://example.com/a b"), "CONFIG_INVALID_SETTING");

        String base = "http://127.0.0.1:" + httpPort;
        Object[][] statuses = {
            {503, "EXTERNAL_API_DOWN"}, {502, "EXTERNAL_API_DOWN"}, {504, "EXTERNAL_TIMEOUT"},
            {500, "EXTERNAL_API_ERROR"}, {429, "TRANSIENT_RATE_LIMIT"},
            {401, "PERMANENT_PERMISSION"}, {403, "PERMANENT_PERMISSION"},
            {404, "PERMANENT_NOT_FOUND"}, {400, "PERMANENT_VALIDATION"},
            {422, "PERMANENT_VALIDATION"},
        };
        for (Object[] row : statuses) {
            int status = (Integer) row[0];
            HttpURLConnection conn = (HttpURLConnection) new URL(base + "/status/" + status)
                .openConnection();
            try {
                conn.getInputStream().close();
                throw new IllegalStateException("no error for " + status);
            } catch (IOException error) {
                String name = "HttpURLConnection " + status;
                record(name, (String) row[1], error, conn.getResponseCode());
                record(name + " (no status)", (String) row[1], error, null);
            }
        }
        capture("HttpURLConnection closed port", "EXTERNAL_API_DOWN",
            () -> new URL("http://127.0.0.1:" + closedPort + "/").openStream().close());
        capture("HttpsURLConnection self-signed certificate (SSLHandshakeException)",
            "CONFIG_INVALID_SETTING",
            () -> new URL("https://127.0.0.1:" + tlsPort + "/").openStream().close());
        capture("HttpsURLConnection to a plain HTTP port (SSLException)", "CONFIG_INVALID_SETTING",
            () -> new URL("https://127.0.0.1:" + httpPort + "/").openStream().close());

        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
        capture("HttpClient closed port (ConnectException)", "EXTERNAL_API_DOWN",
            () -> client.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + closedPort
                + "/")).build(), HttpResponse.BodyHandlers.ofString()));
        capture("HttpClient request timeout (HttpTimeoutException)", "EXTERNAL_TIMEOUT",
            () -> client.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + silent + "/"))
                .timeout(Duration.ofMillis(200)).build(), HttpResponse.BodyHandlers.ofString()));
        capture("HttpClient self-signed certificate", "CONFIG_INVALID_SETTING",
            () -> client.send(HttpRequest.newBuilder(URI.create("https://127.0.0.1:" + tlsPort
                + "/")).build(), HttpResponse.BodyHandlers.ofString()));
        capture("HttpClient server hangs up (IOException)", "TRANSIENT_NETWORK",
            () -> client.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + close
                + "/")).build(), HttpResponse.BodyHandlers.ofString()));
    }

    static void files(Path tmp) throws Exception {
        capture("FileInputStream missing file (FileNotFoundException)", "PERMANENT_NOT_FOUND",
            () -> new FileInputStream(tmp.resolve("missing/report.csv").toFile()).close());
        capture("Files.readString missing file (NoSuchFileException)", "PERMANENT_NOT_FOUND",
            () -> Files.readString(tmp.resolve("missing.csv")));
        Path file = Files.writeString(tmp.resolve("a.txt"), "x");
        capture("Files.newDirectoryStream on a file (NotDirectoryException)", "PERMANENT_NOT_FOUND",
            () -> Files.newDirectoryStream(file).close());
        capture("write to /dev/full (No space left on device)", "SYSTEM_DISK_FULL", () -> {
            try (FileOutputStream out = new FileOutputStream("/dev/full")) {
                out.write(new byte[10000]);
            }
        });
        capture("Files.write to /dev/full (FileSystemException)", "SYSTEM_DISK_FULL",
            () -> Files.write(Path.of("/dev/full"), new byte[10000]));
        Path noexec = Files.writeString(tmp.resolve("not-executable.sh"), "#!/bin/sh\n");
        capture("ProcessBuilder a non-executable file (error=13)", "PERMANENT_PERMISSION",
            () -> new ProcessBuilder(noexec.toString()).start());
        capture("ProcessBuilder a missing program (error=2)", "CONFIG_MISSING_SERVICE",
            () -> new ProcessBuilder("sidecar-capture-no-such-tool").start(),
            "PERMANENT_NOT_FOUND");
        Path latin1 = tmp.resolve("latin1.txt");
        Files.write(latin1, "caf\u00e9".getBytes(StandardCharsets.ISO_8859_1));
        capture("Files.readString of Latin-1 bytes as UTF-8 (MalformedInputException)",
            "PERMANENT_VALIDATION", () -> Files.readString(latin1));
        capture("Files.createDirectory where a file is (FileAlreadyExistsException)",
            "PERMANENT_LOGIC", () -> Files.createDirectory(file), "PERMANENT_VALIDATION");
    }

    static int depth(int n) {
        return depth(n + 1) + 1;
    }

    static void lang() {
        capture("Integer.parseInt('abc') (NumberFormatException)", "PERMANENT_VALIDATION",
            () -> Integer.parseInt("abc"));
        capture("UUID.fromString('not-a-uuid') (IllegalArgumentException)", "PERMANENT_VALIDATION",
            () -> UUID.fromString("not-a-uuid"));
        capture("Enum.valueOf unknown constant (IllegalArgumentException)", "PERMANENT_VALIDATION",
            () -> java.time.DayOfWeek.valueOf("FUNDAY"));
        capture("LocalDate.parse('next tuesday') (DateTimeParseException)", "PERMANENT_VALIDATION",
            () -> LocalDate.parse("next tuesday"));
        capture("Iterator.remove before next (IllegalStateException)", "PERMANENT_LOGIC",
            () -> new ArrayList<>(List.of(1)).iterator().remove());
        capture("NullPointerException", "PERMANENT_LOGIC", () -> {
            String s = System.getenv("SIDECAR_CAPTURE_UNSET");
            s.length();
        });
        capture("array index out of bounds", "PERMANENT_LOGIC", () -> {
            int[] a = new int[2];
            a[2] = 1;
        });
        capture("ClassCastException", "PERMANENT_LOGIC", () -> {
            Object o = "x";
            Integer i = (Integer) o;
        });
        capture("ArithmeticException / by zero", "PERMANENT_LOGIC", () -> {
            int zero = 0;
            int x = 1 / zero;
        });
        capture("List.of().add (UnsupportedOperationException)", "PERMANENT_LOGIC",
            () -> List.of().add(null));
        capture("ConcurrentModificationException", "PERMANENT_LOGIC", () -> {
            List<Integer> l = new ArrayList<>(List.of(1, 2, 3));
            for (Integer i : l) l.remove(i);
        });
        capture("StackOverflowError", "PERMANENT_LOGIC", () -> depth(0));
        capture("OutOfMemoryError (Java heap space)", "SYSTEM_OUT_OF_MEMORY", () -> {
            List<long[]> hog = new ArrayList<>();
            while (true) hog.add(new long[1 << 20]);
        });
        capture("Optional.orElseThrow on empty (NoSuchElementException)", "PERMANENT_NOT_FOUND",
            () -> Optional.empty().orElseThrow(), "PERMANENT_LOGIC");
        capture("Class.forName missing class (ClassNotFoundException)", "CONFIG_MISSING_SERVICE",
            () -> Class.forName("com.example.billing.StripeGateway"));
        capture("Future.get timeout (TimeoutException)", "TRANSIENT_NETWORK", () -> {
            ExecutorService pool = Executors.newSingleThreadExecutor();
            try {
                pool.submit(() -> { Thread.sleep(2000); return null; }).get(100, TimeUnit.MILLISECONDS);
            } finally {
                pool.shutdownNow();
            }
        }, "EXTERNAL_TIMEOUT");
    }

    static Connection pg(String db, String user) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("connectTimeout", "3");
        return DriverManager.getConnection(PG.replaceAll("/[^/]*$", "/" + db), props);
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.execute(sql);
        }
    }

    static void postgres() throws Exception {
        String database = PG.replaceAll(".*/", "");
        try (Connection admin = pg(database, "postgres")) {
            exec(admin, "DROP DATABASE IF EXISTS " + SCRATCH_DB);
            exec(admin, "DROP ROLE IF EXISTS " + SCRATCH_ROLE);
            exec(admin, "CREATE DATABASE " + SCRATCH_DB);
            exec(admin, "CREATE ROLE " + SCRATCH_ROLE + " LOGIN CONNECTION LIMIT 1");
            try {
                postgresCases(admin);
            } finally {
                exec(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"
                    + SCRATCH_DB + "'");
                exec(admin, "DROP DATABASE IF EXISTS " + SCRATCH_DB);
                exec(admin, "DROP ROLE IF EXISTS " + SCRATCH_ROLE);
            }
        }
    }

    static void postgresCases(Connection admin) throws Exception {
        try (Connection db = pg(SCRATCH_DB, "postgres")) {
            exec(db, "CREATE TABLE customer (id int PRIMARY KEY, email text UNIQUE NOT NULL, "
                + "balance int NOT NULL DEFAULT 0)");
            exec(db, "INSERT INTO customer VALUES (1, 'a@example.com'), (2, 'b@example.com')");
            capture("pgjdbc unique_violation (23505)", "PERMANENT_VALIDATION",
                () -> exec(db, "INSERT INTO customer VALUES (3, 'a@example.com')"));
            capture("pgjdbc invalid_text_representation (22P02)", "PERMANENT_VALIDATION",
                () -> exec(db, "SELECT 'abc'::int"));
            capture("pgjdbc undefined_table (42P01)", "PERMANENT_LOGIC",
                () -> exec(db, "SELECT * FROM orders"));
            capture("pgjdbc query timeout (57014)", "TRANSIENT_DATABASE", () -> {
                try (Statement s = db.createStatement()) {
                    s.setQueryTimeout(1);
                    s.execute("SELECT pg_sleep(3)");
                }
            });
            capture("pgjdbc deadlock_detected (40P01)", "TRANSIENT_DATABASE", Capture::deadlock);
            capture("pgjdbc createBlob (SQLFeatureNotSupportedException)", "PERMANENT_LOGIC",
                db::createBlob);
        }
        capture("pgjdbc connection refused (08001)", "TRANSIENT_DATABASE", () -> {
            Properties props = new Properties();
            props.setProperty("user", "x");
            DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + closedPort + "/x", props);
        });
        capture("pgjdbc role does not exist (28000)", "PERMANENT_PERMISSION",
            () -> pg(SCRATCH_DB, "no_such_role"));
        capture("pgjdbc database does not exist (3D000)", "CONFIG_INVALID_SETTING",
            () -> pg("no_such_db", "postgres"));
        capture("pgjdbc too many connections for role (53300)", "TRANSIENT_DATABASE", () -> {
            try (Connection first = pg(SCRATCH_DB, SCRATCH_ROLE)) {
                pg(SCRATCH_DB, SCRATCH_ROLE).close();
            }
        });
        capture("pgjdbc insufficient_privilege (42501)", "PERMANENT_PERMISSION", () -> {
            try (Connection c = loginOnceFree()) {
                exec(c, "SELECT * FROM customer");
            }
        });
        Connection victim = pg(SCRATCH_DB, "postgres");
        int pid;
        try (Statement s = victim.createStatement();
             ResultSet r = s.executeQuery("SELECT pg_backend_pid()")) {
            r.next();
            pid = r.getInt(1);
        }
        exec(admin, "SELECT pg_terminate_backend(" + pid + ")");
        Thread.sleep(200);
        capture("pgjdbc backend terminated (57P01)", "TRANSIENT_DATABASE",
            () -> exec(victim, "SELECT 1"));
        capture("pgjdbc query on the closed connection (08003)", "TRANSIENT_DATABASE",
            () -> exec(victim, "SELECT 1"));
    }

    /** The role's one connection, once the server has let go of the previous one. */
    static Connection loginOnceFree() throws Exception {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (true) {
            try {
                return pg(SCRATCH_DB, SCRATCH_ROLE);
            } catch (SQLException e) {
                if (!"53300".equals(e.getSQLState()) || System.nanoTime() > deadline) throw e;
                Thread.sleep(50);
            }
        }
    }

    static void deadlock() throws Exception {
        try (Connection a = pg(SCRATCH_DB, "postgres"); Connection b = pg(SCRATCH_DB, "postgres")) {
            a.setAutoCommit(false);
            b.setAutoCommit(false);
            exec(a, "SET LOCAL deadlock_timeout = '100ms'");
            exec(b, "SET LOCAL deadlock_timeout = '100ms'");
            exec(a, "UPDATE customer SET balance = balance + 1 WHERE id = 1");
            exec(b, "UPDATE customer SET balance = balance + 1 WHERE id = 2");
            ExecutorService pool = Executors.newFixedThreadPool(2);
            Future<?> first = pool.submit(() -> {
                exec(a, "UPDATE customer SET balance = balance + 1 WHERE id = 2");
                return null;
            });
            Future<?> second = pool.submit(() -> {
                exec(b, "UPDATE customer SET balance = balance + 1 WHERE id = 1");
                return null;
            });
            pool.shutdown();
            for (Future<?> f : List.of(first, second)) {
                try {
                    f.get();
                } catch (ExecutionException e) {
                    throw (Exception) e.getCause();
                }
            }
            throw new IllegalStateException("no deadlock");
        }
    }

    static void hsqldb() throws Exception {
        try (Connection db = DriverManager.getConnection("jdbc:hsqldb:mem:capture", "SA", "")) {
            exec(db, "CREATE TABLE customer (id INT PRIMARY KEY, email VARCHAR(20) UNIQUE NOT NULL)");
            exec(db, "INSERT INTO customer VALUES (1, 'a@example.com')");
            capture("HSQLDB unique constraint (SQLIntegrityConstraintViolationException)",
                "PERMANENT_VALIDATION",
                () -> exec(db, "INSERT INTO customer VALUES (2, 'a@example.com')"));
            capture("HSQLDB value too long (SQLDataException)", "PERMANENT_VALIDATION",
                () -> exec(db, "INSERT INTO customer VALUES (3, '" + "x".repeat(40) + "')"));
            capture("HSQLDB bad cast (SQLDataException)", "PERMANENT_VALIDATION",
                () -> exec(db, "SELECT CAST('abc' AS INT) FROM customer"));
            capture("HSQLDB syntax error (SQLSyntaxErrorException)", "PERMANENT_LOGIC",
                () -> exec(db, "SELEC 1"));
            // HSQLDB says 42501 for both: "user lacks privilege or object not found".
            capture("HSQLDB missing table (SQLSyntaxErrorException)", "PERMANENT_LOGIC",
                () -> exec(db, "SELECT * FROM orders"), "PERMANENT_PERMISSION");
        }
        capture("HSQLDB unknown user (SQLInvalidAuthorizationSpecException)",
            "PERMANENT_PERMISSION",
            () -> DriverManager.getConnection("jdbc:hsqldb:mem:capture", "NOBODY", "x"));
        capture("HSQLDB server not running (SQLTransientConnectionException)", "TRANSIENT_DATABASE",
            () -> DriverManager.getConnection("jdbc:hsqldb:hsql://127.0.0.1:" + closedPort + "/x",
                "SA", ""), "EXTERNAL_API_DOWN");
        Connection closed = DriverManager.getConnection("jdbc:hsqldb:mem:capture", "SA", "");
        closed.close();
        capture("HSQLDB statement on a closed connection (SQLNonTransientConnectionException)",
            "TRANSIENT_DATABASE", closed::createStatement, "PERMANENT_LOGIC");
        try (Connection a = DriverManager.getConnection("jdbc:hsqldb:mem:mvcc", "SA", "");
             Connection b = DriverManager.getConnection("jdbc:hsqldb:mem:mvcc", "SA", "")) {
            exec(a, "SET DATABASE TRANSACTION CONTROL MVCC");
            exec(a, "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
            exec(a, "INSERT INTO t VALUES (1, 0)");
            a.setAutoCommit(false);
            b.setAutoCommit(false);
            a.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
            b.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
            exec(a, "SELECT * FROM t");
            exec(b, "SELECT * FROM t");
            exec(a, "UPDATE t SET v = 1 WHERE id = 1");
            a.commit();
            capture("HSQLDB serialization failure (SQLTransactionRollbackException)",
                "TRANSIENT_DATABASE", () -> {
                    exec(b, "UPDATE t SET v = 2 WHERE id = 1");
                    b.commit();
                });
        }
    }

    public static void main(String[] args) throws Exception {
        closedPort = freePort();
        Path tmp = Files.createTempDirectory("capture-java-");
        ServerSocket silent = server("silent");
        ServerSocket reset = server("reset");
        ServerSocket close = server("close");
        ServerSocket http = server("http");
        SSLServerSocket tls = tlsServer(tmp);
        try {
            net(silent.getLocalPort(), reset.getLocalPort(), close.getLocalPort(),
                http.getLocalPort(), tls.getLocalPort());
            files(tmp);
            lang();
            postgres();
            hsqldb();
        } finally {
            for (ServerSocket s : List.of(silent, reset, close, http, tls)) s.close();
        }
        System.err.println("java " + System.getProperty("java.version") + ": " + CASES.size()
            + " cases");
        System.exit(0);
    }
}
