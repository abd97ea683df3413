"""What the store promises on SQLite and on PostgreSQL alike. The suite runs on SQLite, and on
PostgreSQL under OVERTURE_TEST_DATABASE_URL (.ci/run runs this file both ways): timestamps come
back timezone-aware UTC, values of any length and with NUL characters are stored or looked up
without an error PostgreSQL alone would raise, and conditional status changes racing each other
from two stores (two server processes) have exactly one winner."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import StatementError

from harness import Server, query
from overture.status import Status
from overture.store.db import DeliveryRow, FileRow, PredictionRow
from overture.store.store import Store, utcnow

pytestmark = pytest.mark.timeout(120)


def _prediction(pid: str, created_at: datetime) -> PredictionRow:
    return PredictionRow(
        id=pid, owner="owner", model="tests/steps", version="v", status=Status.STARTING, input={}, logs="",
        created_at=created_at,
    )  # fmt: skip


def test_timestamps_come_back_timezone_aware_utc(tmp_path: Path, database_url: str) -> None:
    store = Store(tmp_path / "data", database_url)
    try:
        tokyo = datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=timezone(timedelta(hours=9)))
        store.add(_prediction("p1", tokyo))
        row = store.prediction("p1")
        assert row is not None
        created = row.created_at
        assert created == tokyo and created.tzinfo == UTC and created.hour == 0 and created.microsecond == 123456

        # Comparisons in SQL see the same moment whatever zone the bound value is in.
        store.transition("p1", [Status.STARTING], deadline=tokyo + timedelta(seconds=1))
        assert [row.id for row in store.overdue_predictions(datetime(2026, 3, 1, 1, 0, tzinfo=UTC))] == ["p1"]
        assert store.overdue_predictions(datetime(2026, 2, 28, 23, 0, tzinfo=UTC)) == []

        # A naive datetime is a bug in the caller: refused, never stored as some zone's local time.
        with pytest.raises(StatementError, match="naive datetime"):
            store.add(_prediction("p2", datetime(2026, 3, 1, 9, 0)))
    finally:
        store.close()


def test_long_text_and_nul_characters_are_kept_the_same_way(tmp_path: Path, database_url: str) -> None:
    store = Store(tmp_path / "data", database_url)
    try:
        name = "n" * 5000 + ".wav"
        store.add(
            FileRow(
                id="f1", owner="owner", name=name, content_type="audio/" + "x" * 300, size=0, md5="", sha256="",
                file_metadata={}, created_at=utcnow(),
            )
        )  # fmt: skip
        assert [f.name for f in store.files_page("owner", None, 10)] == [name]
        store.add(_prediction("p1", utcnow()))
        store.transition("p1", [Status.STARTING], logs="before\x00after", error="e" * 100_000)
        row = store.prediction("p1")
        assert row is not None and row.logs == "before\ufffdafter" and len(row.error or "") == 100_000
        assert store.prediction("p\x00") is None and store.file("f" * 500) is None
    finally:
        store.close()


def _next_key(database_url: str, table: str, key: int) -> None:
    """Make ``key`` the next ``seq`` a new row of ``table`` gets, as after that many rows."""
    if database_url.startswith("sqlite"):  # the rowid: one past the largest there
        query(database_url, f"INSERT INTO {table} (seq, prediction_id, event, data) VALUES ({key - 1}, '', '', '0')")
    else:
        query(database_url, f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), {key - 1})")


def test_byte_counts_and_keys_past_32_bits_are_kept(tmp_path: Path, database_url: str) -> None:
    """PostgreSQL's ``integer`` stops at 2**31 - 1: an upload of 5 GiB (under a raised
    --max-upload-bytes) and the events of a server that has streamed for long need more."""
    store = Store(tmp_path / "data", database_url)
    try:
        store.add(
            FileRow(
                id="f1", owner="owner", name="long.wav", content_type="audio/wav", size=5 * 2**30, md5="", sha256="",
                file_metadata={}, created_at=utcnow(),
            )
        )  # fmt: skip
        assert [f.size for f in store.files_page("owner", None, 10)] == [5 * 2**30]

        _next_key(database_url, "events", 2**31 + 1)
        store.add(_prediction("p1", utcnow()))
        assert store.transition("p1", [Status.STARTING], events=[("logs", "a late line")], logs="a late line")
        assert [(e.seq, e.data) for e in store.events_after("p1", 2**31)] == [(2**31 + 1, "a late line")]
    finally:
        store.close()


def test_the_api_answers_long_and_nul_values_without_a_server_error(tmp_path: Path) -> None:
    srv = Server(tmp_path / "overture-data").start()
    try:
        with srv.http() as http:
            upload = http.post("/v1/files", files={"content": ("a" * 1000 + ".txt", b"x", "text/" + "p" * 300)})
            assert upload.status_code == 201, upload.text
            assert http.get(f"/v1/files/{upload.json()['id']}").json()["name"] == "a" * 1000 + ".txt"
            for path in ("/v1/predictions/" + "p" * 500, "/v1/predictions/a%00b", "/v1/files/a%00b"):
                assert http.get(path).status_code == 404, path
            long_model = http.post(f"/v1/models/tests/{'m' * 300}/predictions", json={"input": {}})
            assert long_model.status_code == 404, long_model.text
    finally:
        srv.stop()


def test_conditional_transitions_from_two_stores_have_one_winner(tmp_path: Path, database_url: str) -> None:
    """Each store stands for a server process: its own connections and its own write lock."""
    stores = [Store(tmp_path / f"data-{i}", database_url) for i in range(2)]
    try:
        ids = [f"p{i}" for i in range(10)]
        for pid in ids:
            stores[0].add(_prediction(pid, utcnow()))
        contenders = [(store, outcome) for store in stores for outcome in (Status.SUCCEEDED, Status.CANCELED)] * 2
        won: dict[str, list[str]] = {pid: [] for pid in ids}

        def contend(store: Store, outcome: str, start: threading.Barrier) -> None:
            for pid in ids:
                start.wait()

                def delivery(row: PredictionRow, outcome: str = outcome) -> DeliveryRow:
                    now = utcnow()
                    return DeliveryRow(
                        id=f"{row.id}-{outcome}-{threading.get_ident()}", prediction_id=row.id, owner="owner",
                        url="http://127.0.0.1:9/hook", event="completed", body=row.status, state="pending",
                        next_attempt_at=now, created_at=now,
                    )  # fmt: skip

                if store.transition_then_add(pid, [Status.STARTING], delivery, status=outcome, completed_at=utcnow()):
                    won[pid].append(outcome)

        start = threading.Barrier(len(contenders))
        threads = [threading.Thread(target=contend, args=(s, o, start)) for s, o in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for pid in ids:
            assert len(won[pid]) == 1, won[pid]
            row = stores[1].prediction(pid)
            assert row is not None and row.status == won[pid][0]
            # The winner's delivery, written in its transaction with the status it carries; no other.
            assert [d.body for d in stores[1].deliveries(pid)] == won[pid]
    finally:
        for store in stores:
            store.close()
