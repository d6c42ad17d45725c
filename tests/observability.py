"""Support for the monitoring-mixin tests: PromQL name extraction, the sidecar's exported
series, throw-away Prometheus and Alertmanager processes, and a capture server standing in
for PagerDuty and Slack.

Stdlib only (plus the project's own modules); the fixtures live in the test modules.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from sidecar.metrics import Metrics

from .polling import wait_for
from .services import HOST, MissingBinaryError, Service, free_port

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = (
    "run scripts/install-test-deps.sh (it installs the Debian packages prometheus and "
    "prometheus-alertmanager; `make test` runs it)"
)
# Labels Prometheus adds to every scraped series (namespace: by Kubernetes relabelling;
# cluster: an external label or relabelling, named by the mixin's `cluster_label`).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "cluster"})


# --- PromQL: which series does an expression read? ------------------------------------------

AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ]
)
LABEL_LIST_KEYWORDS = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])
KEYWORDS = frozenset(["bool", "and", "or", "unless", "offset", "atan2"]) | LABEL_LIST_KEYWORDS
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<number>\d[\w.]*)                  # numbers and durations (5m, 1.5e3)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<variable>\$\{?\w+\}?)             # Grafana variables ($__range, ${task})
    | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){}\[\],@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Selector:
    """A metric read by an expression and the label names its matchers use."""

    metric: str | None
    labels: frozenset[str]
    name_pattern: str | None = None  # a `__name__=~"..."` matcher's regex


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        pos = match.end()
        if match.lastgroup != "space":
            out.append((match.lastgroup or "", match.group()))
    return out


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of a PromQL expression: metric name and matcher labels.

    Functions and aggregations are the identifiers followed by `(` (or by `by`/`without`);
    `by (...)`, `on (...)` and the like hold label names, not metrics; strings, numbers,
    durations and `[...]` ranges are skipped.
    """
    toks = tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and text == "[":
            i = _skip_to(toks, i, "]")
        elif kind == "ident" and text in LABEL_LIST_KEYWORDS and nxt == "(":
            i = _skip_to(toks, i + 1, ")")
        elif kind == "ident" and (text in KEYWORDS or nxt == "(" or text in AGGREGATIONS):
            i += 1
        elif kind == "ident":
            labels, i = _matchers(toks, i + 1)
            found.append(Selector(text, labels))
        elif kind == "op" and text == "{":
            start = i
            labels, i = _matchers(toks, i)
            found.append(Selector(None, labels, _name_pattern(toks[start:i])))
        else:
            i += 1
    return found


def _skip_to(toks: list[tuple[str, str]], i: int, closing: str) -> int:
    while toks[i][1] != closing:
        i += 1
    return i + 1


def _name_pattern(toks: list[tuple[str, str]]) -> str | None:
    for j in range(len(toks) - 2):
        if toks[j][1] == "__name__" and toks[j + 1][1] in ("=", "=~"):
            return json.loads(toks[j + 2][1]) if toks[j + 1][1] == "=~" else None
    return None


def _matchers(toks: list[tuple[str, str]], i: int) -> tuple[frozenset[str], int]:
    """Label names of a `{...}` block starting at i (if any); returns the next index."""
    if i >= len(toks) or toks[i][1] != "{":
        return frozenset(), i
    labels, i = set(), i + 1
    while toks[i][1] != "}":
        if toks[i][0] == "ident" and toks[i + 1][1] in ("=", "!=", "=~", "!~"):
            labels.add(toks[i][1])
        i += 1
    return frozenset(labels), i + 1


def recording_rule_labels(rules: dict[str, Any]) -> dict[str, frozenset[str] | None]:
    """Recording rule name -> the labels its outer `by (...)` keeps (None: not known)."""
    out: dict[str, frozenset[str] | None] = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                match = re.match(r"\s*\w+\s+by\s*\(([^)]*)\)", rule["expr"])
                labels = {s.strip() for s in match.group(1).split(",")} if match else None
                out[rule["record"]] = frozenset(labels) if labels is not None else None
    return out


def unknown_series(
    queries: list[tuple[str, str]],
    exported: dict[str, frozenset[str]],
    recorded: dict[str, frozenset[str] | None],
) -> list[str]:
    """Problems with (where, PromQL) pairs: a metric neither exported nor recorded, or a
    matcher on a label the metric does not have. Grafana's `label_values(expr, label)` is
    read as `expr`, whose metric must carry `label`. A `{__name__=~"re"}` selector must
    match at least one name, and each name it matches is checked."""
    problems = []
    for where, expr in queries:
        wanted: frozenset[str] = frozenset()
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)
        if match:
            expr, wanted = match.group(1), frozenset({match.group(2)})
        found_all: list[Selector] = []
        for found in selectors(expr):
            if found.metric is None and found.name_pattern is not None:
                names = [n for n in (*exported, *recorded) if re.fullmatch(found.name_pattern, n)]
                if not names:
                    problems.append(f"{where}: no series name matches {found.name_pattern}")
                labels = found.labels - {"__name__"}
                found_all.extend(Selector(name, labels) for name in names)
            else:
                found_all.append(found)
        for found in found_all:
            if found.metric == "up":
                known: frozenset[str] | None = TARGET_LABELS
            elif found.metric in exported:
                known = exported[found.metric]
            elif found.metric in recorded:
                known = recorded[found.metric]
            else:
                problems.append(f"{where}: {found.metric} is neither exported nor recorded")
                continue
            missing = (found.labels | wanted) - known if known is not None else set()
            if missing:
                problems.append(f"{where}: {found.metric} has no label {sorted(missing)}")
    return problems


# --- what the sidecar exports ------------------------------------------------------------------


def exported_series(target_labels: frozenset[str] = TARGET_LABELS) -> dict[str, frozenset[str]]:
    """Every sample name the sidecar's /metrics can show, with its label names.

    Built from sidecar.metrics on a fresh registry, with one child per labelled metric so
    the exposition shows the real sample names (`_total`, `_created`, `_bucket`...).
    """
    metrics = Metrics(CollectorRegistry())
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*["x"] * len(value._labelnames))
    text = generate_latest(metrics.registry).decode()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels | target_labels) for name, labels in series.items()}


# --- Prometheus and Alertmanager as child processes --------------------------------------------


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise MissingBinaryError(f"{binary} not found on PATH; {INSTALL_HINT}")
    return path


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any, timeout: float = 5) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


class PrometheusService(Service):
    name = "prometheus"
    ready_timeout = 30.0

    def __init__(self, root: Path, port: int, config: Path) -> None:
        super().__init__(root, port)
        self.config = config
        self.binary = require("prometheus")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            f"--web.external-url={self.url}",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ]

    def _is_ready(self) -> bool:
        return _answers(f"{self.url}/-/ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises on a PromQL error)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = get_json(url)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{expr}\n-> {error.read().decode()}") from None
        result = answer["data"]["result"]
        return result if isinstance(result, list) else [result]

    def series(self, match: str) -> list[dict[str, str]]:
        url = f"{self.url}/api/v1/series?" + urllib.parse.urlencode({"match[]": match})
        return get_json(url)["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]


class AlertmanagerService(Service):
    name = "alertmanager"
    ready_timeout = 30.0

    def __init__(self, root: Path, port: int, config: Path) -> None:
        super().__init__(root, port)
        self.config = config
        self.binary = require("prometheus-alertmanager")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            f"--web.external-url={self.url}",
            "--cluster.listen-address=",  # no gossip: nothing listens on 0.0.0.0:9094
            "--log.level=warn",
        ]

    def _is_ready(self) -> bool:
        return _answers(f"{self.url}/-/ready")

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        post_json(f"{self.url}/api/v2/alerts", alerts)

    def alerts(self) -> list[dict[str, Any]]:
        return get_json(f"{self.url}/api/v2/alerts")


def start_service(cls: type[Service], tmpdir: Path, config: Path) -> Any:
    root = Path(tempfile.mkdtemp(prefix=f"{cls.name}-", dir=tmpdir))
    service = cls(root, free_port(), config)  # type: ignore[call-arg]
    try:
        return service.start()
    except BaseException:
        service.close()
        raise


def local_alertmanager_config(
    committed: dict[str, Any], secrets: Path, capture_url: str
) -> dict[str, Any]:
    """The committed Alertmanager config, pointed at a capture server.

    Routes, grouping, inhibitions and templates stay as committed; only the secret files
    (written here: a routing key, and webhook URLs that lead to the capture server), the
    PagerDuty endpoint and the group timers (1 s, for a quick test) change.
    """
    config = json.loads(json.dumps(committed))  # deep copy
    secrets.mkdir(parents=True, exist_ok=True)
    for receiver in config["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            key_file = secrets / Path(pd["routing_key_file"]).name
            key_file.write_text("e2e-routing-key\n")
            pd["routing_key_file"] = str(key_file)
            pd["url"] = f"{capture_url}/pagerduty"
        for slack in receiver.get("slack_configs", []):
            url_file = secrets / Path(slack["api_url_file"]).name
            url_file.write_text(f"{capture_url}/slack/{receiver['name']}\n")
            slack["api_url_file"] = str(url_file)
    config["route"].update(group_wait="1s", group_interval="1s")
    return config


# --- a capture server for PagerDuty and Slack ---------------------------------------------------


@dataclass
class Captured:
    path: str
    body: Any


@dataclass
class CaptureServer:
    """Answers 200 to every POST and keeps what it received."""

    received: list[Captured] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success", "ok": true}')
                with capture._changed:
                    capture.received.append(Captured(self.path, body))
                    capture._changed.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, predicate: Callable[[Captured], bool], timeout: float) -> Captured:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for item in self.received:
                    if predicate(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(f"{c.path}: {c.body}" for c in self.received) or "nothing"
                    raise AssertionError(f"not received within {timeout}s; received:\n{seen}")
                self._changed.wait(left)


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """wait_for, counting a server that does not answer yet as "not yet"."""

    def answered() -> Any:
        with contextlib.suppress(OSError):
            return check()
        return None

    return wait_for(answered, timeout, what, interval)


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
