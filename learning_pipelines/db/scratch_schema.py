"""A throw-away PostgreSQL schema inside the warehouse database, for `deploy verify`'s smoke ingest.

It is reached through a URL whose `options` set `search_path` to it alone, so everything built through that URL
(Alembic's tables and its alembic_version, review_logs' month partitions, temporary work tables) lands inside it
and nothing outside it is touched. Dropped with everything it holds; a schema left by a killed run is found by its
name prefix.
"""

from __future__ import annotations

import re
import uuid

import sqlalchemy as sa

SCHEMA_PREFIX = "deploy_verify_"
_NAME = re.compile(rf"^{SCHEMA_PREFIX}[0-9a-f]+$")


def create_schema(engine: sa.Engine) -> str:
    """A new empty schema named deploy_verify_<hex>; returns its name."""
    name = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    return name


def schema_url(url: str | sa.URL, schema: str) -> str:
    """`url` with `search_path` set to `schema` (other connection options it carries are kept)."""
    _check_name(schema)
    parsed = sa.engine.make_url(url)
    options = parsed.query.get("options", "")
    options = " ".join(options) if isinstance(options, tuple) else options
    return parsed.update_query_dict({"options": f"{options} -csearch_path={schema}".strip()}).render_as_string(
        hide_password=False)


def drop_schema(engine: sa.Engine, schema: str) -> None:
    """Drop the schema and everything in it; nothing when it is already gone."""
    _check_name(schema)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def scratch_schemas(engine: sa.Engine) -> list[str]:
    """Schemas of the database that carry the scratch prefix (left by a run that was killed, or in use)."""
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :prefix) "
                                     "ORDER BY nspname"), {"prefix": SCHEMA_PREFIX}).scalars().all()
    return list(names)


def _check_name(schema: str) -> None:
    """Only names this module made are quoted into SQL."""
    if not _NAME.match(schema):
        raise ValueError(f"{schema!r} is not a scratch schema name ({SCHEMA_PREFIX}<hex>)")
