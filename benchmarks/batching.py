"""Continuous batching: many concurrent MusicGen predictions on one device.

Random weights with the real ``facebook/musicgen-small`` shape (see ``musicgen.py``, which builds
and caches them). Side by side in one run:

  (a) plain ``generate``, the requests one after another;
  (b) plain ``generate`` with all requests in one batch (one call; every row runs the longest);
  (c) Overture serving them as concurrent API predictions: a real server subprocess on loopback,
      driven by the real ``replicate`` client from one thread per request.

Each request has its own prompt and seed (top-k 250, guidance 3); the clients poll at the
``replicate`` client's own interval (0.5 s, ``REPLICATE_POLL_INTERVAL``). Throughput is audio
seconds per wall second. First the batch-1 decoder step: Overture's (with the linear kernels the
server picks at load) against plain ``generate``'s (``F.linear``), and both against the
memory-bandwidth floor (one matrix-vector pass over every decoder weight, measured here); the
baselines then run with ``F.linear``, as transformers ships. A second scenario submits requests at
intervals with durations of 2 to 10 s and reports each one's latency.

    .venv/bin/python benchmarks/batching.py [--requests 8] [--seconds 5] [--staggered 6] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import replicate  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from musicgen import HUB_ID, build  # noqa: E402

from overture.models.linear import restore_linears  # noqa: E402
from overture.models.musicgen.batching import ContinuousBatch, Generation  # noqa: E402
from overture.models.musicgen.checkpoint import MusicgenCheckpoint, load_checkpoint  # noqa: E402
from overture.models.musicgen.request import Sampling  # noqa: E402
from overture.models.musicgen.runner import select_kernels  # noqa: E402

PROMPTS = [
    "80s pop track with bassy drums and synth",
    "lofi hip hop beat with mellow piano",
    "epic orchestral soundtrack with choir",
    "smooth jazz with saxophone",
    "heavy metal riff with double kick drums",
    "ambient pads with soft rain",
    "reggae groove with offbeat guitar",
    "techno track with a driving kick",
]
TOKEN = "r8_benchmark_token"
SAMPLING = Sampling(top_k=250, top_p=0.0, temperature=1.0, guidance=3.0)


def plain_sequential(checkpoint: MusicgenCheckpoint, count: int, seconds: int) -> float:
    steps = checkpoint.frames(seconds) + checkpoint.max_delay
    started = time.perf_counter()
    for i in range(count):
        tokens = checkpoint.tokenizer([PROMPTS[i % len(PROMPTS)]], return_tensors="pt")
        torch.manual_seed(i)
        with torch.inference_mode():
            checkpoint.model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=steps)
    return time.perf_counter() - started


def plain_batched(checkpoint: MusicgenCheckpoint, count: int, seconds: int) -> float:
    steps = checkpoint.frames(seconds) + checkpoint.max_delay
    tokens = checkpoint.tokenizer([PROMPTS[i % len(PROMPTS)] for i in range(count)], return_tensors="pt", padding=True)
    started = time.perf_counter()
    with torch.inference_mode():
        checkpoint.model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=steps)
    return time.perf_counter() - started


class Served:
    """A real Overture server on loopback, serving the random checkpoint."""

    def __init__(self, directory: Path):
        self.data = Path(tempfile.mkdtemp(prefix="overture-batching-"))
        port = 18000 + os.getpid() % 1000
        self.url = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "overture", "serve", "--port", str(port), "--data-dir", str(self.data)]
        args += ["--token", TOKEN, "--checkpoint", f"{HUB_ID}={directory}", "--no-cache"]
        self.log = open(self.data / "server.log", "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {self.data / 'server.log'}")

    def client(self) -> replicate.Client:
        return replicate.Client(api_token=TOKEN, base_url=self.url)

    def predict(self, prompt: str, seed: int, seconds: int) -> float:
        """One prediction start to finish; its latency."""
        started = time.perf_counter()
        prediction = self.client().predictions.create(
            model="meta/musicgen",
            input={"prompt": prompt, "model_version": "small", "duration": seconds, "seed": seed},
        )
        prediction.wait()
        if prediction.status != "succeeded":
            raise RuntimeError(f"prediction {prediction.id} {prediction.status}: {prediction.error}")
        return time.perf_counter() - started

    def peak_rss_gb(self) -> float:
        """The server process's resident-memory high-water mark so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        return kilobytes / 2**20

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def concurrently(jobs: list[tuple[float, Callable[[], float]]]) -> tuple[float, list[float]]:
    """Start each job at its delay (seconds from now) on its own thread; wall time and latencies."""
    latencies = [0.0] * len(jobs)
    started = time.perf_counter()

    def run(index: int, delay: float, job: Callable[[], float]) -> None:
        time.sleep(max(0.0, started + delay - time.perf_counter()))
        latencies[index] = job()

    threads = [threading.Thread(target=run, args=(i, d, j)) for i, (d, j) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def step_times(checkpoint: MusicgenCheckpoint, steps: int = 40) -> tuple[float, float, float]:
    """Median batch-1 decoder step of Overture's loop and of plain ``generate``, and the floor."""
    select_kernels(checkpoint)
    batch = ContinuousBatch(checkpoint)

    class Quiet:
        def progress(self, done: int, total: int) -> None: ...

        def check_canceled(self) -> None: ...

    text = checkpoint.encode_text(PROMPTS[0])
    batch.join(Generation(text, SAMPLING, torch.Generator().manual_seed(1), Quiet(), frames=steps + 20))
    ours = []
    for _ in range(steps):
        started = time.perf_counter()
        batch.step()
        ours.append(time.perf_counter() - started)
    restore_linears(checkpoint.model.decoder)
    plain = []
    tokens = checkpoint.tokenizer([PROMPTS[0]], return_tensors="pt")
    with torch.inference_mode():
        checkpoint.model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=5)
        for count in (steps // 2, steps):
            started = time.perf_counter()
            checkpoint.model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=count)
            plain.append(time.perf_counter() - started)
    plain_step = (plain[1] - plain[0]) / (steps - steps // 2)
    return statistics.median(ours), plain_step, bandwidth_floor(checkpoint)


def bandwidth_floor(checkpoint: MusicgenCheckpoint) -> float:
    """One matrix-vector product with every linear weight of the decoder: reading each byte once."""
    weights = [m.weight for m in checkpoint.model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(1, w.shape[1]) for w in weights}
    times = []
    with torch.inference_mode():
        for _ in range(5):
            started = time.perf_counter()
            for weight in weights:
                F.linear(inputs[weight.shape[1]], weight)
            times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--staggered", type=int, default=6, help="requests in the staggered scenario (0: skip)")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between staggered arrivals")
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "overture" / "musicgen-small-random")
    args = parser.parse_args()
    if not (args.dir / "model.safetensors").exists():
        args.dir.mkdir(parents=True, exist_ok=True)
        build(args.dir)
    checkpoint = load_checkpoint(args.dir, "cpu", torch.float32)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"musicgen-small shape, random weights; {args.requests} requests of {args.seconds} s, top-k 250, guidance 3")

    ours, plain_step, floor = step_times(checkpoint)
    print(f"batch-1 step: overture {1000 * ours:.0f} ms, plain generate {1000 * plain_step:.0f} ms, "
          f"bandwidth floor {1000 * floor:.0f} ms -> overture {ours / floor:.2f}x floor, plain {plain_step / floor:.2f}x")  # fmt: skip

    audio = args.requests * args.seconds
    sequential = plain_sequential(checkpoint, args.requests, args.seconds)
    print(f"(a) plain generate, one after another: {sequential:7.1f} s, {audio / sequential:.3f} audio-s/s")
    batched = plain_batched(checkpoint, args.requests, args.seconds)
    print(f"(b) plain generate, one batch of {args.requests}:   {batched:7.1f} s, {audio / batched:.3f} audio-s/s")
    del checkpoint

    server = Served(args.dir)
    try:
        server.predict("warm-up: loads the checkpoint", 1, 1)
        jobs = [
            (0.0, lambda i=i: server.predict(PROMPTS[i % len(PROMPTS)], 100 + i, args.seconds))
            for i in range(args.requests)
        ]
        served, latencies = concurrently(jobs)
        print(f"(c) overture, {args.requests} concurrent API predictions: {served:7.1f} s, {audio / served:.3f} audio-s/s "
              f"(latency median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s)")  # fmt: skip
        print(f"ratios: (c)/(a) {sequential / served:.2f}x, (c)/(b) {batched / served:.2f}x")
        if args.staggered:
            durations = [2 + (8 * i) // max(1, args.staggered - 1) for i in range(args.staggered)]
            jobs = [
                (i * args.interval, lambda i=i, d=d: server.predict(PROMPTS[i % len(PROMPTS)], 200 + i, d))
                for i, d in enumerate(durations)
            ]
            wall, latencies = concurrently(jobs)
            print(f"staggered: a request every {args.interval:g} s, {sum(durations)} audio-s in {wall:.1f} s, "
                  f"{sum(durations) / wall:.3f} audio-s/s")  # fmt: skip
            for i, (d, latency) in enumerate(zip(durations, latencies, strict=True)):
                print(f"  request {i}: {d:2d} s clip, arrived at {i * args.interval:5.1f} s, latency {latency:6.1f} s")
        print(f"server peak resident memory: {server.peak_rss_gb():.1f} GiB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
