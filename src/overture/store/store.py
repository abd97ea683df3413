"""Records and files under one data directory.

Every state change of a prediction is a conditional UPDATE (``WHERE status IN ...``), so a cancel
racing a completion has exactly one winner and the database stays the single source of truth.
Files are written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Table, case, delete, false, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from overture.errors import TooLarge
from overture.outputs import FILE_REF, FileRef
from overture.prices import UsageGroup
from overture.status import ACTIVE, TERMINAL, Status
from overture.store import migrate
from overture.store.db import DeliveryRow, EventRow, FileRow, PredictionRow, connect
from overture.upstreams import LOCAL_PROVIDER

R = TypeVar("R", PredictionRow, FileRow, DeliveryRow)


def utcnow() -> datetime:
    """Now, timezone-aware: the database's timestamps come back aware too (``db.UTCDateTime``)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    md5: str
    sha256: str


def _transition(
    db: Connection | Session, pid: str, from_status: Iterable[str], events: Iterable[tuple[str, Any]], values: Any
) -> bool:
    table = cast(Table, PredictionRow.__table__)
    result = db.execute(
        update(table)
        .where(table.c.id == pid, table.c.status.in_(tuple(from_status)))
        # With nothing to change, a self-assignment still tells whether the status matches.
        .values(**(values or {"status": table.c.status}))
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        return False
    rows = [{"prediction_id": pid, "event": event, "data": data} for event, data in events]
    if rows:
        db.execute(insert(cast(Table, EventRow.__table__)), rows)
    return True


def default_database_url(data_dir: Path) -> str:
    """Without ``--database-url``: a SQLite file in the data directory."""
    return f"sqlite:///{data_dir / 'overture.db'}"


class Store:
    def __init__(self, data_dir: Path, database_url: str | None = None):
        self.data_dir = data_dir
        self.uploads_dir = data_dir / "files"
        self.outputs_dir = data_dir / "outputs"
        self.scratch_dir = data_dir / "scratch"
        for d in (self.uploads_dir, self.outputs_dir, self.scratch_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.engine = connect(database_url or default_database_url(data_dir))
        migrate.upgrade(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction. Writers queue on a lock here rather than inside SQLite, whose busy
        handler sleeps up to 100 ms between retries and made concurrent creates slow."""
        with self._write_lock, self._session.begin() as session:
            yield session

    def check_writable(self) -> None:
        """A write that changes nothing; raises when the database refuses writes (read-only, full, gone)."""
        with self.writing() as s:
            s.execute(update(PredictionRow).where(false()).values(id=PredictionRow.id))

    def close(self) -> None:
        self.engine.dispose()

    # -- predictions ---------------------------------------------------------------------------

    # -- records of either kind ----------------------------------------------------------------

    def add(self, row: R) -> R:
        with self.writing() as s:
            s.add(row)
        return row

    def _one(self, table: type[R], rid: str, owner: str | None) -> R | None:
        query = select(table).where(table.id == rid)
        if owner is not None:
            query = query.where(table.owner == owner)
        with self.session() as s:
            return s.scalars(query).first()

    def _page(self, table: type[R], owner: str, before_seq: int | None, limit: int, *where: Any) -> list[R]:
        """Newest first; ``before_seq`` continues after the last row of the previous page."""
        query = select(table).where(table.owner == owner, *where)
        if before_seq is not None:
            query = query.where(table.seq < before_seq)
        with self.session() as s:
            return list(s.scalars(query.order_by(table.seq.desc()).limit(limit)))

    # -- predictions ---------------------------------------------------------------------------

    def prediction(self, pid: str, owner: str | None = None) -> PredictionRow | None:
        return self._one(PredictionRow, pid, owner)

    def prediction_by_idempotency_key(self, key: str) -> PredictionRow | None:
        with self.session() as s:
            return s.scalars(select(PredictionRow).where(PredictionRow.idempotency_key == key)).first()

    def predictions_page(
        self, owner: str, before_seq: int | None, limit: int, model: str | None = None, status: str | None = None
    ) -> list[PredictionRow]:
        """A page of the owner's predictions, only those of ``model`` and in ``status`` when given."""
        where = [PredictionRow.model == model] if model is not None else []
        where += [PredictionRow.status == status] if status is not None else []
        return self._page(PredictionRow, owner, before_seq, limit, *where)

    def overdue_predictions(self, now: datetime) -> list[PredictionRow]:
        query = select(PredictionRow).where(PredictionRow.status.in_(ACTIVE), PredictionRow.deadline < now)
        with self.session() as s:
            return list(s.scalars(query))

    def active_predictions(self) -> list[PredictionRow]:
        """Predictions a previous server process left unfinished, oldest first."""
        query = select(PredictionRow).where(PredictionRow.status.in_(ACTIVE)).order_by(PredictionRow.seq)
        with self.session() as s:
            return list(s.scalars(query))

    def transition(
        self, pid: str, from_status: Iterable[str], events: Iterable[tuple[str, Any]] = (), **values: Any
    ) -> bool:
        """Set ``values`` only if the prediction is still in one of ``from_status``; record the
        stream ``events`` in the same transaction, so a reader never sees one without the other.

        Runs on a bare connection: this is the hottest write, and the ORM session's bookkeeping
        cost more than the statement."""
        with self._write_lock, self.engine.begin() as conn:
            return _transition(conn, pid, from_status, events, values)

    def transition_then_add(
        self,
        pid: str,
        from_status: Iterable[str],
        then: Callable[[PredictionRow], Any],
        events: Iterable[tuple[str, Any]] = (),
        **values: Any,
    ) -> bool:
        """``transition``, and in the same transaction the row ``then`` makes of the updated
        prediction: a terminal status and its ``completed`` webhook delivery are written together,
        so a crash between two commits cannot lose the delivery."""
        with self.writing() as s:
            if not _transition(s, pid, from_status, events, values):
                return False
            s.add(then(s.scalars(select(PredictionRow).where(PredictionRow.id == pid)).one()))
            return True

    def run_count(self, model: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).where(PredictionRow.model == model)) or 0

    def usage(
        self, since: datetime, until: datetime, owner: str | None = None, upstream_only: bool = False
    ) -> list[UsageGroup]:
        """Predictions created in ``[since, until)``, summed per owner, provider, hardware and model:
        the finest grouping any report asks for, so that each group has one price (overture/prices.py).
        ``owner`` keeps one token's; ``upstream_only`` leaves out the local runs."""
        p = PredictionRow
        keys = (p.owner, p.provider, p.hardware, p.model)
        query = select(
            *keys,
            func.count(),
            func.count(p.predict_time),
            func.coalesce(func.sum(p.predict_time), 0.0),
            func.coalesce(func.sum(case((p.status.in_(ACTIVE), 1), else_=0)), 0),
        ).where(p.created_at >= since, p.created_at < until)
        if owner is not None:
            query = query.where(p.owner == owner)
        if upstream_only:
            query = query.where(p.provider != LOCAL_PROVIDER)
        with self.session() as s:
            return [UsageGroup(*row) for row in s.execute(query.group_by(*keys))]

    def cached_result(self, cache_key: str) -> PredictionRow | None:
        query = (
            select(PredictionRow)
            .where(
                PredictionRow.cache_key == cache_key,
                PredictionRow.status == Status.SUCCEEDED,
                PredictionRow.data_removed.is_(False),
            )
            .order_by(PredictionRow.seq.desc())
        )
        with self.session() as s:
            return s.scalars(query).first()

    def remove_data_before(self, cutoff: datetime) -> int:
        """Retention: drop input, output, logs and output files of predictions finished before ``cutoff``."""
        query = select(PredictionRow.id).where(
            PredictionRow.completed_at < cutoff, PredictionRow.data_removed.is_(False)
        )
        with self.session() as s:
            ids = list(s.scalars(query))
        for pid in ids:
            shutil.rmtree(self.outputs_dir / pid, ignore_errors=True)
            self.transition(pid, TERMINAL, input=None, output=None, logs="", data_removed=True, cache_key=None)
            with self.writing() as s:
                s.execute(delete(EventRow).where(EventRow.prediction_id == pid))
        return len(ids)

    # -- stream events -------------------------------------------------------------------------

    def events_after(self, pid: str, after_seq: int | None) -> list[EventRow]:
        query = select(EventRow).where(EventRow.prediction_id == pid)
        if after_seq is not None:
            query = query.where(EventRow.seq > after_seq)
        with self.session() as s:
            return list(s.scalars(query.order_by(EventRow.seq)))

    # -- webhook deliveries --------------------------------------------------------------------

    def refresh_unsent(self, pid: str, events: tuple[str, ...], event: str, body: str) -> bool:
        """Give a not-yet-attempted delivery of one of ``events`` the latest state instead of queueing another."""
        with self.writing() as s:
            result = s.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.prediction_id == pid,
                    DeliveryRow.state == "pending",
                    DeliveryRow.attempts == 0,
                    DeliveryRow.event.in_(events),
                )
                .values(event=event, body=body)
            )
            return cast(CursorResult[Any], result).rowcount > 0

    def pending_deliveries(self, limit: int) -> list[DeliveryRow]:
        query = select(DeliveryRow).where(DeliveryRow.state == "pending").order_by(DeliveryRow.seq).limit(limit)
        with self.session() as s:
            return list(s.scalars(query))

    def update_delivery(self, did: str, **values: Any) -> None:
        with self.writing() as s:
            s.execute(update(DeliveryRow).where(DeliveryRow.id == did).values(**values))

    def deliveries(self, pid: str) -> list[DeliveryRow]:
        query = select(DeliveryRow).where(DeliveryRow.prediction_id == pid).order_by(DeliveryRow.seq)
        with self.session() as s:
            return list(s.scalars(query))

    # -- output files --------------------------------------------------------------------------

    def scratch(self, pid: str) -> Path:
        path = self.scratch_dir / pid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def sweep_leftovers(self) -> None:
        """Remove what a killed process left half-done: partial uploads and scratch files."""
        for part in self.uploads_dir.glob(".*.part"):
            part.unlink(missing_ok=True)
        shutil.rmtree(self.scratch_dir, ignore_errors=True)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)

    def clear_scratch(self, pid: str) -> None:
        shutil.rmtree(self.scratch_dir / pid, ignore_errors=True)

    def publish_output(self, pid: str, source: Path) -> FileRef:
        """Move a finished file into the prediction's outputs, atomically; return its reference."""
        target_dir = self.outputs_dir / pid
        target_dir.mkdir(parents=True, exist_ok=True)
        name = _safe_name(source.name)
        os.replace(source, target_dir / name)
        return {FILE_REF: f"{pid}/{name}"}

    def share_output(self, ref: FileRef, pid: str) -> FileRef:
        """Give prediction ``pid`` its own copy of another prediction's output (a hard link when possible)."""
        source = self.output_path(ref[FILE_REF])
        target_dir = self.outputs_dir / pid
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / source.name
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return {FILE_REF: f"{pid}/{source.name}"}

    def output_path(self, rel: str) -> Path:
        """The file behind ``<prediction id>/<name>``; rejects anything that would leave the outputs
        dir, or that no file could be named (the file system's ENAMETOOLONG would be a 500)."""
        pid, _, name = rel.partition("/")
        if not pid or not name or name != _safe_name(name) or pid != _safe_name(pid):
            raise FileNotFoundError(rel)
        if max(len(part.encode("utf-8", "surrogatepass")) for part in (pid, name)) > _NAME_MAX:
            raise FileNotFoundError(rel)
        return self.outputs_dir / pid / name

    # -- uploaded files ------------------------------------------------------------------------

    def save_upload(self, fid: str, stream: BinaryIO, limit: int) -> StoredFile:
        """Copy an upload to disk while hashing it; past ``limit`` bytes stop and raise ``TooLarge``."""
        final = self.uploads_dir / fid
        tmp = self.uploads_dir / f".{fid}.part"
        md5, sha = hashlib.md5(), hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"file is larger than the {limit} byte limit")
                    md5.update(chunk)
                    sha.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredFile(final, size, md5.hexdigest(), sha.hexdigest())

    def file(self, fid: str, owner: str | None = None) -> FileRow | None:
        return self._one(FileRow, fid, owner)

    def files_page(self, owner: str, before_seq: int | None, limit: int) -> list[FileRow]:
        return self._page(FileRow, owner, before_seq, limit)

    def upload_path(self, fid: str) -> Path:
        return self.uploads_dir / _safe_name(fid)

    def delete_file(self, row: FileRow) -> None:
        with self.writing() as s:
            s.delete(s.merge(row))
        self.upload_path(row.id).unlink(missing_ok=True)

    def delete_files_before(self, cutoff: datetime) -> int:
        with self.session() as s:
            rows = list(s.scalars(select(FileRow).where(FileRow.created_at < cutoff)))
        for row in rows:
            self.delete_file(row)
        return len(rows)


#: The longest file name, in bytes, of the file systems a data directory lives on.
_NAME_MAX = 255


def _safe_name(name: str) -> str:
    """A single path component: no separators, no dot-only names."""
    cleaned = name.replace("/", "_").replace("\\", "_").replace("\x00", "_")
    return cleaned if cleaned.strip(".") else "_"
