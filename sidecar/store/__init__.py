"""Persistence behind small interfaces (ports.py): the SQL store (sqlstore.py) over a SQLite
or PostgreSQL connector, Redis, in-process memory, the Redis fallbacks and the spool.
Which ones a sidecar uses is decided in `sidecar.service.compose`."""
