"""Where and how models run, apart from what they are: finding and keeping weights
(``checkpoints``), the device and dtype they run on, and CPU kernel selection (``linear``).

Layering: api → engine → models → runtime. Nothing here imports ``overture.models``,
``overture.engine`` or ``overture.api``, so every layer above can use it without cycles.
"""
