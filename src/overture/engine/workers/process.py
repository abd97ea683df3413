"""The default transport: each pool in a child process of its own, started with ``spawn``.

Threads, CUDA and OpenMP do not survive ``fork``, and a model that crashes or hangs in native
code must not take the API server with it: the child can be killed, and is started again for the
next job. Messages cross one duplex pipe, pickled. The child reads the engine's messages on its
main thread and runs the pool on worker threads; when the pipe closes (the server is gone, even
by SIGKILL) the read fails and the child exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from overture.engine.workers.protocol import (
    Cancel,
    Done,
    Event,
    Job,
    JobEvent,
    Log,
    ModelEvent,
    Output,
    PoolSpec,
    Unload,
    WorkerFailed,
)
from overture.engine.workers.runtime import PoolRuntime, code_failure, predictor_class
from overture.engine.workers.transport import EventSink, WorkerLost
from overture.logs import configure_worker

log = logging.getLogger("overture")

_SPAWN = multiprocessing.get_context("spawn")
#: How long a stopping child may take to finish its threads before it is killed.
STOP_SECONDS = 10.0


class ProcessWorker:
    """One pool's child process: started on the first job and again on the first job after it
    died. Jobs sent to a process that dies are reported lost, so none waits forever."""

    def __init__(self, spec: PoolSpec, sink: EventSink):
        self.spec = spec
        self._sink = sink
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._stopped = False

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._stopped:
                return  # the server is stopping: the job stays active in the records for the next start
            if self._child is None:
                self._child = _Child(self)
            self._child.send(job)

    def cancel(self, prediction_id: str) -> None:
        with self._lock:
            if self._child is not None and prediction_id in self._child.outstanding:
                self._child.send(Cancel(prediction_id))

    def unload(self, key: str) -> None:
        with self._lock:
            if self._child is not None:
                self._child.send(Unload(key))

    def kill(self, reason: str) -> None:
        """Kill the child now (it ignored a cancel); its other jobs are reported lost."""
        with self._lock:
            child = self._child
        if child is not None:
            child.kill(reason)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            child, self._child = self._child, None
        if child is not None:
            child.stop()

    def _ended(self, child: _Child) -> None:
        with self._lock:
            if self._child is child:
                self._child = None


class _Child:
    """One incarnation of a pool's process, with the jobs it holds and the thread reading it."""

    def __init__(self, owner: ProcessWorker):
        self.owner = owner
        self.spec = owner.spec
        #: Ids of the jobs sent and not yet answered with ``Done``.
        self.outstanding: set[str] = set()
        self._killed_because: str | None = None
        self._stopping = False
        self._failed: str | None = None
        self._conn, child_conn = _SPAWN.Pipe()
        self.process: BaseProcess = _SPAWN.Process(
            target=serve, args=(child_conn, self.spec), name=f"overture-worker {self.spec.name}", daemon=True
        )
        self.process.start()
        child_conn.close()
        log.info("worker for %s started (pid %s)", self.spec.name, self.process.pid)
        self._reader = threading.Thread(target=self._read, name=f"events-{self.spec.name}", daemon=True)
        self._reader.start()

    def send(self, message: Job | Cancel | Unload | None) -> None:
        if isinstance(message, Job):
            self.outstanding.add(message.prediction_id)
        try:
            self._conn.send(message)
        except (OSError, ValueError):
            pass  # the child is gone; the reader reports its jobs lost

    def kill(self, reason: str) -> None:
        if self._killed_because is None:
            self._killed_because = reason
            log.warning("killing worker for %s (pid %s): %s", self.spec.name, self.process.pid, reason)
            self.process.kill()

    def stop(self) -> None:
        self._stopping = True
        self.send(None)
        self.process.join(STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_SECONDS)
        self._reader.join(STOP_SECONDS)

    def _read(self) -> None:
        while True:
            try:
                event: Event = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # a message that does not unpickle here: whose it was is unknown
                self.kill(f"sent a message the server could not read ({type(exc).__name__}: {exc})")
                continue
            if isinstance(event, Done):
                self.outstanding.discard(event.prediction_id)
            elif isinstance(event, WorkerFailed):
                self._failed = event.error
                continue
            try:
                self.owner._sink.event(self.spec.name, event)
            except Exception:
                log.exception("could not handle %s from the worker for %s", type(event).__name__, self.spec.name)
        self._conn.close()
        self.process.join(STOP_SECONDS)
        self.owner._ended(self)
        if self._stopping:
            return
        if self._failed is not None:
            log.error("worker for %s could not start: %s", self.spec.name, self._failed)
            lost = WorkerLost(self._failed, retryable=False)
        else:
            cause = self._killed_because or _exit_cause(self.process.exitcode)
            log.error("worker for %s (pid %s) ended: %s", self.spec.name, self.process.pid, cause)
            lost = WorkerLost(f"The model's worker process {cause}.", retryable=True)
        self.owner._sink.lost(self.spec.name, list(self.outstanding), lost)


def _exit_cause(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def serve(conn: Connection, spec: PoolSpec) -> None:
    """The child's main: load the pool's code, then run what the engine sends until told to stop
    or until the server is gone."""
    # Ctrl-C, or a supervisor's SIGTERM, reaches the whole process group; the server stops its
    # workers itself once its open requests are done, and a worker outlives it only until its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_worker(spec.name, spec.log_format)
    try:
        cls = predictor_class(spec)
    except BaseException as exc:  # noqa: BLE001 - whatever the import raised, the engine must hear it
        conn.send(WorkerFailed(code_failure(exc)))
        os._exit(1)  # not a normal exit: threads the failed import started could hold up the interpreter's
    send_lock = threading.Lock()

    def emit(event: JobEvent | ModelEvent) -> None:
        with send_lock:
            try:
                conn.send(event)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                conn.send(_unsendable(event, exc))
            except OSError:
                os._exit(0)  # the server is gone

    runtime = PoolRuntime(spec, cls, emit)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: exit even with worker threads stuck in native code
        if message is None:
            runtime.stop()
            # Not a normal exit: a thread still in native code would abort the interpreter's
            # shutdown ("terminate called without an active exception").
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        if isinstance(message, Job):
            runtime.submit(message)
        elif isinstance(message, Cancel):
            runtime.cancel(message.prediction_id)
        elif isinstance(message, Unload):
            # Not on this thread: it may wait for a model being loaded, and cancels must still get through.
            threading.Thread(target=runtime.unload, args=(message.key,), daemon=True).start()


def _unsendable(event: JobEvent | ModelEvent, exc: Exception) -> JobEvent:
    problem = f"the model returned a value that is not JSON: {exc}"
    if isinstance(event, Done):
        return Done(event.prediction_id, error=f"Could not store the output: {problem}")
    if isinstance(event, Output):
        return Log(event.prediction_id, f"A partial output was dropped: {problem}")
    raise exc
