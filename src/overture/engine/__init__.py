"""Queues, runs, events, webhooks and workers. One prediction's path:

1. ``api/predictions.py`` validates the request and calls ``Engine.create`` (``engine.py``).
2. ``Engine.create`` records the prediction and makes its ``PredictionRun`` (``run.py``).
3. The pool's feeder fetches file inputs (``inputs.py``), tries ``cache.py``, sends a ``Job``.
4. ``workers/process.py`` carries it to the pool's child process (``workers/inline.py``: a thread).
5. There ``workers/runtime.py`` queues and batches it and calls the model's ``predict``.
6. The model's ``Context`` calls come back as events (``workers/protocol.py``) to ``Engine.event``.
7. ``events.py`` records each, wakes waiters and streams, and queues webhooks (``webhooks.py``).
8. ``Done`` ends the run; ``api/present.py`` shows the record.
"""
