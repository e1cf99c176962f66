"""ClickHouse HTTP front over chDB for the local development stack (see server.py)."""
