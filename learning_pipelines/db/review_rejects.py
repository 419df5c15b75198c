"""Reading review_log_rejects back: the rows an import or the review_logs asset rejected, with their reasons."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from learning_pipelines.db.tables import review_log_rejects as rejects


@dataclasses.dataclass(frozen=True)
class Rejects:
    rows: list[sa.RowMapping]  # source, line_number, reason, raw_row, rejected_at: at most the limit asked for
    total: int  # every reject of the source (or of the warehouse)


def rejects_of(conn: sa.Connection, source: str | None, limit: int) -> Rejects:
    """The rejects of `source` (a file's path as its import was given it, or an asset partition) in line order,
    else the latest ones of every source; at most `limit` rows, and how many there are in all."""
    where = rejects.c.source == source if source is not None else sa.true()
    order = ((rejects.c.line_number, rejects.c.reject_id) if source is not None
             else (rejects.c.reject_id.desc(),))
    rows = conn.execute(sa.select(rejects.c.source, rejects.c.line_number, rejects.c.reason, rejects.c.raw_row,
                                  rejects.c.rejected_at).where(where).order_by(*order).limit(limit)).mappings().all()
    total = conn.execute(sa.select(sa.func.count()).select_from(rejects).where(where)).scalar_one()
    return Rejects(list(rows), total)


def sources_like(conn: sa.Connection, name: str, limit: int = 5) -> list[str]:
    """Stored sources ending with `name` (a file name given without the path its import used)."""
    return list(conn.execute(sa.select(rejects.c.source).where(rejects.c.source.endswith(name, autoescape=True))
                             .distinct().order_by(rejects.c.source).limit(limit)).scalars())
