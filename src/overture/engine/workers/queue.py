"""A worker's queue of jobs for its pool, from which its threads take a compatible batch.

Owners (API tokens) take turns: each owner's jobs wait in arrival order in a lane of their own,
and the queue serves the lanes round-robin, one job per turn, so one token's 500 queued
predictions do not wait ahead of another's one. An owner just served goes to the back of the
turns; an owner whose lane was empty joins at the back.

The queue also keeps count of the threads serving it: a worker that finds nothing to do for
``idle_seconds`` retires, and ``put`` asks for a new one when fewer are alive than wanted. A
thread that ran torch keeps its OpenMP team for as long as it lives, and while two teams exist
libgomp stops spinning between parallel regions, so an idle model's thread would make every
other model's small operations several times slower on CPU.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator

from overture.engine.workers.protocol import Job


class QueueClosed(Exception):
    """The queue was closed, or the worker asking has been idle long enough to retire."""


#: A worker with nothing to do for this long retires (see the module docstring).
WORKER_IDLE_SECONDS = 2.0


class JobQueue:
    def __init__(self, workers: int = 1, idle_seconds: float = WORKER_IDLE_SECONDS) -> None:
        #: Each owner's jobs in arrival order, the owners in the order of their turns.
        self._lanes: dict[str, deque[Job]] = {}
        self._size = 0
        self._ready = threading.Condition()
        self._closed = False
        self._wanted = workers
        self._idle_seconds = idle_seconds
        self._live = 0

    def put(self, job: Job) -> bool:
        """Queue ``job``; True when the caller must start a worker (one is counted in already)."""
        with self._ready:
            self._lanes.setdefault(job.owner, deque()).append(job)
            self._size += 1
            self._ready.notify()
            if self._live < self._wanted:
                self._live += 1
                return True
            return False

    def replace_worker(self) -> bool:
        """A worker thread failed; True when the caller must start another in its place (it
        stays counted), False when there is nothing queued for one (it is counted out)."""
        with self._ready:
            if self._size and not self._closed:
                return True
            self._live -= 1
            return False

    def _wait_for_job(self) -> bool:
        """Wait (lock held) until there is a job or the queue closes; False when the caller has
        waited ``idle_seconds`` for nothing and is now retired."""
        while not self._size and not self._closed:
            if not self._ready.wait(self._idle_seconds) and not self._size and not self._closed:
                self._live -= 1
                return False
        return True

    def _in_turn(self) -> Iterator[Job]:
        """The queued jobs in the order they will be taken: each lane's first, in turn, then
        each lane's second, and so on. Lock held; the caller stops before changing the lanes."""
        rounds = [iter(lane) for lane in self._lanes.values()]
        while rounds:
            left = []
            for lane in rounds:
                job = next(lane, None)
                if job is not None:
                    yield job
                    left.append(lane)
            rounds = left

    def _served(self, jobs: list[Job]) -> None:
        """Take ``jobs`` out of their lanes (lock held); their owners go to the back of the turns."""
        for job in jobs:
            lane = self._lanes.pop(job.owner)
            lane.remove(job)
            if lane:
                self._lanes[job.owner] = lane
        self._size -= len(jobs)

    def order(self) -> list[str]:
        """The prediction ids of the queued jobs, next to be taken first."""
        with self._ready:
            return [job.prediction_id for job in self._in_turn()]

    def remove(self, prediction_id: str) -> bool:
        with self._ready:
            for owner, lane in self._lanes.items():
                for job in lane:
                    if job.prediction_id == prediction_id:
                        lane.remove(job)
                        self._size -= 1
                        if not lane:
                            del self._lanes[owner]
                        return True
        return False

    def take(self, limit: int, key: Callable[[Job], Hashable]) -> list[Job]:
        """Block for the job whose turn it is, then add queued jobs with the same batch key, in
        turn order, up to ``limit``.

        The job whose turn it is always leads, so no job waits behind an endless stream of later
        ones. Returns an empty list once the queue is closed or the worker has retired.
        """
        with self._ready:
            if not self._wait_for_job() or self._closed:
                return []
            waiting = self._in_turn()
            first = next(waiting)
            batch = [first]
            if limit > 1:
                wanted = key(first)
                for job in waiting:
                    if len(batch) >= limit:
                        break
                    if key(job) == wanted:
                        batch.append(job)
            self._served(batch)
            return batch

    def take_next(self, admits: Callable[[Job], bool], block: bool) -> Job | None:
        """The job whose turn it is when ``admits`` it, else None; later jobs never overtake it,
        so a job that does not fit yet waits for room rather than behind an endless stream of
        smaller ones.

        With ``block``, waits for a job first. Raises ``QueueClosed`` once the queue is closed or
        the worker has retired.
        """
        with self._ready:
            if block and not self._wait_for_job():
                raise QueueClosed()
            if self._closed:
                raise QueueClosed()
            if self._size:
                job = next(iter(self._lanes.values()))[0]
                if admits(job):
                    self._served([job])
                    return job
            return None

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
