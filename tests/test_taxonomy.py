"""The default taxonomy against real exceptions of the libraries a Python worker uses.

tests/data/exceptions.jsonl is captured from the real libraries by
scripts/capture-exceptions.py (run by hand); each row holds the exception in the wire shape
and the failure type we judge right for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from sidecar.policy import load_policy
from sidecar.policy.events import ExceptionInfo

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_policy(ROOT / "policies.yaml")
DATA = ROOT / "tests" / "data" / "exceptions.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
TASK = "app.tasks.some_task"


def classify(exception: dict):
    return POLICY.classify(msgspec.convert(exception, ExceptionInfo), TASK)


def synthetic(qualified: str, *bases: str, message: str = "", **fields) -> dict:
    """A wire exception of a library we did not capture: its class, its bases, its message."""
    module, _, name = qualified.rpartition(".")
    mro = [qualified, *bases, "builtins.Exception", "builtins.BaseException"]
    return {"type": name, "module": module, "mro": mro, "message": message, **fields}


class TestCapturedData:
    """The captured rows are well-formed and name failure types the policy knows."""

    def test_rows(self):
        cases = [row["case"] for row in ROWS]
        assert len(cases) == len(set(cases)), "duplicate case names"
        assert {row["expected"] for row in ROWS} <= set(POLICY.failure_types)
        for row in ROWS:
            msgspec.convert(row["exception"], ExceptionInfo)


class TestCapturedExceptions:
    """Each real exception is classified as the failure type judged right for it."""

    @pytest.mark.parametrize("row", ROWS, ids=[row["case"] for row in ROWS])
    def test_classification(self, row):
        got = classify(row["exception"])
        assert got.failure_type == row["expected"], (
            f"{row['case']}: got {got.failure_type} by rule {got.rule} ({got.confidence})"
        )


class TestRuleCoverage:
    """Every default rule is the winning rule for at least one captured exception (of
    Python here, or of another runtime: tests/test_taxonomy_languages.py)."""

    def test_no_dead_rules(self):
        other = ROOT / "tests" / "data" / "exceptions-other.jsonl"
        rows = ROWS + [json.loads(line) for line in other.read_text().splitlines() if line]
        winners = {classify(row["exception"]).rule for row in rows}
        dead = [rule.name for rule in POLICY.rules if rule.name not in winners]
        assert not dead, f"rules that win for no captured exception: {dead}"


class TestFallback:
    """An exception no rule knows falls back to a low-confidence PERMANENT_LOGIC for a human."""

    def test_unknown_exception(self):
        got = classify(synthetic("acme.billing.LedgerMismatch", message="ledger 42 is off"))
        assert (got.rule, got.failure_type, got.confidence, got.remediation) == (
            "fallback",
            "PERMANENT_LOGIC",
            0.3,
            "INVESTIGATE",
        )


OTHER_LIBRARIES = [
    (
        "stripe RateLimitError",
        synthetic(
            "stripe.error.RateLimitError",
            "stripe.error.StripeError",
            message="Request req_Fz1: Too many requests hit the API too quickly.",
        ),
        "TRANSIENT_RATE_LIMIT",
    ),
    (
        "stripe AuthenticationError",
        synthetic(
            "stripe.error.AuthenticationError",
            "stripe.error.StripeError",
            message="Invalid API Key provided: sk_live_****1234",
            http_status=401,
        ),
        "PERMANENT_PERMISSION",
    ),
    (
        "google ServiceUnavailable",
        synthetic(
            "google.api_core.exceptions.ServiceUnavailable",
            "google.api_core.exceptions.ServerError",
            "google.api_core.exceptions.GoogleAPICallError",
            "google.api_core.exceptions.GoogleAPIError",
            message="503 The service is currently unavailable.",
        ),
        "EXTERNAL_API_DOWN",
    ),
    (
        "google DeadlineExceeded",
        synthetic(
            "google.api_core.exceptions.DeadlineExceeded",
            "google.api_core.exceptions.GatewayTimeout",
            "google.api_core.exceptions.ServerError",
            "google.api_core.exceptions.GoogleAPICallError",
            message="504 Deadline Exceeded",
        ),
        "EXTERNAL_TIMEOUT",
    ),
    (
        "google ResourceExhausted",
        synthetic(
            "google.api_core.exceptions.ResourceExhausted",
            "google.api_core.exceptions.TooManyRequests",
            "google.api_core.exceptions.ClientError",
            "google.api_core.exceptions.GoogleAPICallError",
            message="429 Quota exceeded for quota metric 'Read requests' of service "
            "'sheets.googleapis.com'",
        ),
        "TRANSIENT_RATE_LIMIT",
    ),
    (
        "pymongo AutoReconnect",
        synthetic(
            "pymongo.errors.AutoReconnect",
            "pymongo.errors.ConnectionFailure",
            "pymongo.errors.PyMongoError",
            message="mongo-0:27017: connection closed",
        ),
        "TRANSIENT_NETWORK",
    ),
    (
        "pymongo NetworkTimeout",
        synthetic(
            "pymongo.errors.NetworkTimeout",
            "pymongo.errors.AutoReconnect",
            "pymongo.errors.ConnectionFailure",
            "pymongo.errors.PyMongoError",
            message="mongo-0:27017: timed out",
        ),
        "TRANSIENT_NETWORK",
    ),
    (
        "pymongo DuplicateKeyError",
        synthetic(
            "pymongo.errors.DuplicateKeyError",
            "pymongo.errors.WriteError",
            "pymongo.errors.OperationFailure",
            "pymongo.errors.PyMongoError",
            message="E11000 duplicate key error collection: shop.orders index: ref_1 "
            'dup key: { ref: "A-1" }',
        ),
        "PERMANENT_VALIDATION",
    ),
    (
        "sqlalchemy OperationalError",
        synthetic(
            "sqlalchemy.exc.OperationalError",
            "sqlalchemy.exc.DatabaseError",
            "sqlalchemy.exc.DBAPIError",
            "sqlalchemy.exc.StatementError",
            "sqlalchemy.exc.SQLAlchemyError",
            message="(psycopg2.OperationalError) server closed the connection "
            "unexpectedly\n\tThis probably means the server terminated abnormally",
        ),
        "TRANSIENT_DATABASE",
    ),
    (
        "sqlalchemy IntegrityError",
        synthetic(
            "sqlalchemy.exc.IntegrityError",
            "sqlalchemy.exc.DatabaseError",
            "sqlalchemy.exc.DBAPIError",
            "sqlalchemy.exc.SQLAlchemyError",
            message="(psycopg.errors.UniqueViolation) duplicate key value violates "
            'unique constraint "user_email_key"',
        ),
        "PERMANENT_VALIDATION",
    ),
    (
        "sqlalchemy NoResultFound",
        synthetic(
            "sqlalchemy.exc.NoResultFound",
            "sqlalchemy.exc.InvalidRequestError",
            "sqlalchemy.exc.SQLAlchemyError",
            message="No row was found when one was required",
        ),
        "PERMANENT_NOT_FOUND",
    ),
    (
        "sqlite3 OperationalError database is locked",
        synthetic(
            "sqlite3.OperationalError",
            "sqlite3.DatabaseError",
            "sqlite3.Error",
            message="database is locked",
        ),
        "TRANSIENT_DATABASE",
    ),
    (
        "pymysql OperationalError access denied",
        synthetic(
            "pymysql.err.OperationalError",
            "pymysql.err.DatabaseError",
            "pymysql.err.MySQLError",
            message="(1045, \"Access denied for user 'app'@'10.0.0.5' (using password: YES)\")",
        ),
        "PERMANENT_PERMISSION",
    ),
    (
        "pymysql OperationalError deadlock",
        synthetic(
            "pymysql.err.OperationalError",
            "pymysql.err.DatabaseError",
            "pymysql.err.MySQLError",
            message="(1213, 'Deadlock found when trying to get lock; try restarting transaction')",
        ),
        "TRANSIENT_DATABASE",
    ),
    (
        "amqp ConnectionForced",
        synthetic(
            "amqp.exceptions.ConnectionForced",
            "amqp.exceptions.RecoverableConnectionError",
            "amqp.exceptions.ConnectionError",
            "amqp.exceptions.AMQPError",
            message="(0, 0): (320) CONNECTION_FORCED - broker forced connection closure "
            "with reason 'shutdown'",
        ),
        "TRANSIENT_NETWORK",
    ),
    (
        "openai APIConnectionError",
        synthetic(
            "openai.APIConnectionError",
            "openai.APIError",
            "openai.OpenAIError",
            message="Connection error.",
        ),
        "TRANSIENT_NETWORK",
    ),
    (
        "openai RateLimitError",
        synthetic(
            "openai.RateLimitError",
            "openai.APIStatusError",
            "openai.APIError",
            "openai.OpenAIError",
            message="Error code: 429 - {'error': {'message': 'Rate limit reached for "
            "requests', 'type': 'requests'}}",
        ),
        "TRANSIENT_RATE_LIMIT",
    ),
    (
        "jwt ExpiredSignatureError",
        synthetic(
            "jwt.exceptions.ExpiredSignatureError",
            "jwt.exceptions.DecodeError",
            "jwt.exceptions.InvalidTokenError",
            "jwt.exceptions.PyJWTError",
            message="Signature has expired",
        ),
        "PERMANENT_PERMISSION",
    ),
    (
        "pydantic ValidationError",
        synthetic(
            "pydantic_core._pydantic_core.ValidationError",
            "builtins.ValueError",
            message="1 validation error for Order\nquantity\n  Input should be a valid "
            "integer [type=int_parsing, input_value='two', input_type=str]",
        ),
        "PERMANENT_VALIDATION",
    ),
    (
        "azure ResourceNotFoundError",
        synthetic(
            "azure.core.exceptions.ResourceNotFoundError",
            "azure.core.exceptions.HttpResponseError",
            "azure.core.exceptions.AzureError",
            message="The specified blob does not exist.\nErrorCode:BlobNotFound",
        ),
        "PERMANENT_NOT_FOUND",
    ),
    (
        "smtplib SMTPServerDisconnected",
        synthetic(
            "smtplib.SMTPServerDisconnected",
            "smtplib.SMTPException",
            "builtins.OSError",
            message="Connection unexpectedly closed",
        ),
        "TRANSIENT_NETWORK",
    ),
    (
        "smtplib SMTPAuthenticationError",
        synthetic(
            "smtplib.SMTPAuthenticationError",
            "smtplib.SMTPResponseException",
            "smtplib.SMTPException",
            "builtins.OSError",
            message="(535, b'5.7.8 Username and Password not accepted.')",
        ),
        "PERMANENT_PERMISSION",
    ),
]


class TestOtherLibraries:
    """General rules catch the failures of libraries the capture script does not cover."""

    @pytest.mark.parametrize(
        ("exception", "expected"),
        [(exception, expected) for _, exception, expected in OTHER_LIBRARIES],
        ids=[case for case, _, _ in OTHER_LIBRARIES],
    )
    def test_classification(self, exception, expected):
        got = classify(exception)
        assert got.failure_type == expected, f"got {got.failure_type} by rule {got.rule}"


class TestManyMessagePatterns:
    """Past RE2's memory budget for one set, the patterns spread over several sets."""

    def test_every_pattern_is_still_found(self):
        from sidecar.policy.regex import PatternSet

        patterns = [f"(?i)upstream {i} refused [a-z]+ after \\d+ tries" for i in range(6000)]
        found = PatternSet(patterns)
        assert len(found._sets) > 1  # one set of 6,000 fails to compile
        text = "UPSTREAM 17 refused x after 1 tries; upstream 5999 refused y after 2 tries"
        assert found.matching(text) == {17, 5999}
        assert found.matching("upstream 17 refused") == set()
