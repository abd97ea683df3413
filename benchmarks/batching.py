"""Continuous batching: many concurrent MusicGen predictions on one device.

Random weights with the real ``facebook/musicgen-small`` shape (see ``musicgen.py``, which builds
and caches them; ``--shape smoke`` builds a small one instead, for a smoke run). The
checkpoint is loaded here by the server's own loader (``overture.models.musicgen.runner.load``),
which picks the decoder's linear kernels at load as the server does. Side by side in one run:

  (a)  plain ``generate``, the requests one after another, with ``F.linear`` (as transformers ships);
  (b)  plain ``generate`` with all requests in one batch (one call; every row runs the longest),
       with ``F.linear``;
  (b') the same one batch of plain ``generate``, with the kernels the loader chose here (each
       load measures anew: the script says whether the server chose the same);
  (c)  Overture serving them as concurrent API predictions: a real server subprocess on loopback
       (the model in its worker process, as ``overture serve`` runs it by default; ``--workers
       inline`` runs it in the server process), driven by the real ``replicate`` client from one
       thread per request.

(c)/(b) is the gain over what a user would script, kernels included; (c)/(b') is the gain of the
serving loop alone, on the same kernels. Each ratio line says what differs between its two sides:
the batch, the kernels, the threads and the serving.

Each request has its own prompt and seed (top-k 250, guidance 3). The clients poll as
``Prediction.wait`` does (sleep, then GET), every 0.5 s (the ``replicate`` client's own interval,
``REPLICATE_POLL_INTERVAL``) and then every 0.1 s: ``--poll`` lists the intervals, and (c) runs
once for each, in that order (repeat one to average it: ``0.5,0.1,0.1,0.5``). For each, the
decoder's step rate inside the server: mid-run, the slope of the progress each client saw in its
polls (the progress bar's step count against the poll's time, the rows between their first and
last step; the median over the predictions), and over the whole prediction, steps over
``predict_time`` (which includes text encoding and writing the WAV). The two poll rates' step
rates are set against each other: what the faster polling costs the decoder. Throughput is audio
seconds per wall second. First the batch-1 decoder step: Overture's loop against plain
``generate`` with ``F.linear``, and both against the memory-bandwidth floor (one matrix-vector
pass over every decoder weight, measured here).

A second scenario submits requests at intervals with durations of 2 to 10 s (``--longest``), the
clients polling at the first ``--poll`` interval: each one's latency
(finish - arrival) at the server, against (b') run as a static-batching server would run it
(whenever the previous batch has finished, every request that has arrived so far runs as one
``generate`` batch, as long as its longest clip; a clock that skips idle time). Then the peak
resident memory of the server with its child processes (the workers: each one's VmHWM, and their
summed RSS sampled every 0.5 s) and the server process's CPU time per GET of a finished
prediction.

On a GPU (``--device cuda``; by default the server's own choice, CUDA when there is one) both
sides run in the dtype the server's loader picks there (bfloat16 where supported, else float16),
the linear kernels are plain ``F.linear`` (the kernel choice is CPU-only), and every timing waits
for the device. ``--no-plain`` runs only the server's side ((c), without the plain-``generate``
comparisons and the staggered scenario, which needs (b')), and ``--alone`` first times one
prediction alone, so that (c) can be set against it: ``benchmarks/gpu.sh`` runs a 30 s
stereo-large prediction this way, alone and with 16 concurrent.

    .venv/bin/python benchmarks/batching.py [--requests 8] [--seconds 5] [--poll 0.5,0.1]
        [--staggered 6] [--interval 4] [--longest 10] [--gets 400]
        [--shape small|large|stereo-large|smoke|stereo-smoke] [--device cpu|cuda]
        [--workers process|inline] [--no-plain] [--alone] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import replicate  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from replicate.prediction import Prediction  # noqa: E402

import overture  # noqa: E402
from _machine import machine_line  # noqa: E402
from _procs import cpu_seconds, descendants  # noqa: E402
from musicgen import MODEL_VERSIONS, SHAPES, Context, build, hub_id  # noqa: E402
from overture.models.musicgen import runner  # noqa: E402
from overture.models.musicgen.batching import ContinuousBatch, Generation  # noqa: E402
from overture.models.musicgen.checkpoint import MusicgenCheckpoint  # noqa: E402
from overture.models.musicgen.request import Sampling  # noqa: E402
from overture.runtime.checkpoints import Checkpoints, CheckpointSettings  # noqa: E402
from overture.runtime.linear import DispatchLinear, set_packed_enabled  # noqa: E402

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


class LoadLog(Context):
    """What the server's loader logs (the kernel report among it), kept to be printed."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="batching-load-")))
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.extend(message.splitlines())


def kernel_line(lines: list[str]) -> str:
    """The kernel report's first line (choice, threads) from a loader's log lines."""
    return next((line for line in lines if line.startswith("linear kernels:")), "no kernel report in the log")


def kernel_choice(lines: list[str]) -> list[str]:
    """The kernel report's choice per weight shape and row count (its "chosen" rows)."""
    return [line.split() for line in lines if line.strip().startswith("chosen")][:-1]  # the last: all layers, ms


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device``, so that a wall clock read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate(checkpoint: MusicgenCheckpoint, prompts: list[str], seconds: int, seed: int) -> float:
    """One plain ``generate`` call for these prompts as one batch; its wall time."""
    steps = checkpoint.frames(seconds) + checkpoint.max_delay
    tokens = checkpoint.tokenizer(prompts, return_tensors="pt", padding=True).to(checkpoint.device)
    torch.manual_seed(seed)
    sync(checkpoint.device)
    started = time.perf_counter()
    with torch.inference_mode():
        checkpoint.model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=steps)
    sync(checkpoint.device)
    return time.perf_counter() - started


def static_batches(
    checkpoint: MusicgenCheckpoint, arrivals: list[float], durations: list[int]
) -> tuple[list[float], list[list[int]]]:
    """A static-batching server on a clock: whenever the previous batch has finished, every
    request that has arrived runs as one ``generate`` batch, as long as its longest clip. Each
    request's latency (finish - arrival) and the batches. Idle time is skipped, not slept."""
    clock, waiting = 0.0, list(range(len(arrivals)))
    latencies, batches = [0.0] * len(arrivals), []
    while waiting:
        clock = max(clock, arrivals[waiting[0]])
        batch = [i for i in waiting if arrivals[i] <= clock]
        prompts = [PROMPTS[i % len(PROMPTS)] for i in batch]
        clock += generate(checkpoint, prompts, max(durations[i] for i in batch), 300 + batch[0])
        for i in batch:
            latencies[i] = clock - arrivals[i]
        waiting = [i for i in waiting if i not in batch]
        batches.append(batch)
    return latencies, batches


def proc_status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a mapping; empty when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def kib(status: dict[str, str], key: str) -> int:
    """A ``/proc/PID/status`` memory field in KiB (0 when absent)."""
    return int(status.get(key, "0 kB").split()[0])


def process_label(pid: int, root: int) -> str:
    """What a process of the server's tree is: the server, a worker (a ``spawn`` child), or else."""
    if pid == root:
        return "server"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    if "resource_tracker" in command:
        return "resource tracker"
    if "spawn_main" in command:
        return "worker"
    return command.split(" ", 1)[0].rsplit("/", 1)[-1] or "process"


class TreeMemory:
    """Resident memory of a process and its descendants (the server and its workers), sampled on
    a thread: each process's own high-water mark (VmHWM, kept for those that have ended) and the
    largest sum of their resident memory (VmRSS) at one sample. Where the kernel keeps no VmHWM,
    the largest VmRSS sampled stands in for it."""

    def __init__(self, root: int, interval: float = 0.5):
        self.root = root
        self.interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> label, VmHWM KiB
        self.summed_peak = 0  # KiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        summed = 0
        for pid in [self.root, *descendants(self.root)]:
            status = proc_status(pid)
            if not status:
                continue
            label = self.peaks[pid][0] if pid in self.peaks else process_label(pid, self.root)
            # Where the kernel keeps no VmHWM, the largest VmRSS sampled stands in for it.
            peak = kib(status, "VmHWM") or kib(status, "VmRSS")
            self.peaks[pid] = (label, max(peak, self.peaks.get(pid, ("", 0))[1]))
            summed += kib(status, "VmRSS")
        self.summed_peak = max(self.summed_peak, summed)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def line(self) -> str:
        """The tree's peak as a sum of its processes' peaks (an upper bound: they need not peak at
        once), each process's, and the sampled peak of their sum."""
        self.sample()
        total = sum(peak for _, peak in self.peaks.values())
        each = ", ".join(f"{label} (pid {pid}) {peak / 2**20:.1f}" for pid, (label, peak) in sorted(self.peaks.items()))
        return (
            f"{total / 2**20:.1f} GiB, the sum of each process's VmHWM (GiB: {each}); their summed RSS, "
            f"sampled every {self.interval:g} s, at most {self.summed_peak / 2**20:.1f} GiB"
        )


@dataclass
class Finished:
    """One prediction as its client saw it: latency, the prediction as it ended, and at each
    poll (time, steps done, steps in all) from the progress bar in its logs."""

    latency: float
    prediction: Prediction
    polls: list[tuple[float, int, int]]
    gets: int


class Served:
    """A real Overture server on loopback, serving the checkpoint in ``directory``."""

    def __init__(self, directory: Path, shape: str, device: str | None, workers: str):
        self.data = Path(tempfile.mkdtemp(prefix="overture-batching-"))
        self.model_version = MODEL_VERSIONS[shape]
        port = 18000 + os.getpid() % 1000
        self.url = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "overture", "serve", "--port", str(port), "--data-dir", str(self.data)]
        args += ["--token", TOKEN, "--checkpoint", f"{hub_id(shape)}={directory}", "--no-cache", "--workers", workers]
        # Its clients poll as fast as the benchmark asks: no rate limit may hold them back.
        args += ["--rate-limit-requests", "0"]
        # The server and its workers import the overture this process imported (a worktree's src).
        source = str(Path(overture.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
        if device:
            env["OVERTURE_DEVICE"] = device
        self.log = open(self.data / "server.log", "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.memory = TreeMemory(self.process.pid)
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {self.data / 'server.log'}")

    def predict(self, prompt: str, seed: int, seconds: int, poll: float) -> Finished:
        """One prediction start to finish, its client polling every ``poll`` seconds as
        ``Prediction.wait`` does (sleep, then GET), and noting the progress each poll shows."""
        started = time.perf_counter()
        client = replicate.Client(api_token=TOKEN, base_url=self.url)
        client.poll_interval = poll
        prediction = client.predictions.create(
            model="meta/musicgen",
            input={"prompt": prompt, "model_version": self.model_version, "duration": seconds, "seed": seed},
        )
        polls, gets = [], 0
        while prediction.status not in ("succeeded", "failed", "canceled"):
            time.sleep(poll)
            prediction.reload()
            gets += 1
            progress = prediction.progress
            if progress is not None:
                polls.append((time.perf_counter(), progress.current, progress.total))
        if prediction.status != "succeeded":
            raise RuntimeError(f"prediction {prediction.id} {prediction.status}: {prediction.error}")
        return Finished(time.perf_counter() - started, prediction, polls, gets)

    def tree_cpu_seconds(self) -> tuple[float, float]:
        """CPU time used so far by the server process, and by its live descendants (the workers)."""
        return cpu_seconds(self.process.pid), sum(cpu_seconds(pid) for pid in descendants(self.process.pid))

    def get_cpu_ms(self, prediction_id: str, count: int) -> tuple[float, float]:
        """Server process CPU and client wall time per GET of one prediction, ``count`` sequential GETs."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.url, headers=headers) as http:
            http.get(f"/v1/predictions/{prediction_id}").raise_for_status()
            cpu, wall = cpu_seconds(self.process.pid), time.perf_counter()
            for _ in range(count):
                http.get(f"/v1/predictions/{prediction_id}").raise_for_status()
            wall, cpu = time.perf_counter() - wall, cpu_seconds(self.process.pid) - cpu
        return 1000 * cpu / count, 1000 * wall / count

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's own log (stdout and stderr), for a run that failed."""
        return "\n".join((self.data / "server.log").read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.memory.stop()
        self.process.terminate()
        self.process.wait(30)


Job = Callable[[], Finished]


def concurrently(jobs: list[tuple[float, Job]]) -> tuple[float, list[Finished]]:
    """Start each job at its delay (seconds from now) on its own thread; wall time and each one as
    it finished. A job that fails leaves no latency to average: the run stops."""
    results: dict[int, Finished] = {}
    started = time.perf_counter()

    def run(index: int, delay: float, job: Job) -> None:
        time.sleep(max(0.0, started + delay - time.perf_counter()))
        results[index] = job()

    threads = [threading.Thread(target=run, args=(i, d, j)) for i, (d, j) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if len(results) < len(jobs):
        raise RuntimeError(f"{len(jobs) - len(results)} of {len(jobs)} predictions failed (see above)")
    return wall, [results[i] for i in range(len(jobs))]


def mid_run_rate(polls: list[tuple[float, int, int]]) -> float | None:
    """Steps a second from the progress one client saw: the least-squares slope of steps done
    against poll time, over the polls after its first step and before its last (None with
    fewer than three such polls)."""
    inner = [(t, done) for t, done, total in polls if 0 < done < total]
    if len(inner) < 3 or inner[-1][0] - inner[0][0] <= 0:
        return None
    return statistics.linear_regression([t for t, _ in inner], [float(d) for _, d in inner]).slope


def step_times(checkpoint: MusicgenCheckpoint, steps: int = 40) -> tuple[float, float, float]:
    """Median batch-1 decoder step of Overture's loop (selected kernels) and of plain
    ``generate`` (F.linear), and the bandwidth floor."""
    batch = ContinuousBatch(checkpoint)

    class Quiet:
        def progress(self, done: int, total: int) -> None: ...

        def check_canceled(self) -> None: ...

    device = checkpoint.device
    text = checkpoint.encode_text(PROMPTS[0])
    generator = torch.Generator(device=device).manual_seed(1)
    batch.join(Generation(text, SAMPLING, generator, Quiet(), frames=steps + 20))
    ours = []
    for _ in range(steps):
        sync(device)
        started = time.perf_counter()
        batch.step()
        sync(device)
        ours.append(time.perf_counter() - started)
    set_packed_enabled(checkpoint.model.decoder, False)
    plain = []
    tokens = checkpoint.tokenizer([PROMPTS[0]], return_tensors="pt").to(device)
    with torch.inference_mode():
        checkpoint.model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=5)
        for count in (steps // 2, steps):
            sync(device)
            started = time.perf_counter()
            checkpoint.model.generate(**tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=count)
            sync(device)
            plain.append(time.perf_counter() - started)
    set_packed_enabled(checkpoint.model.decoder, True)
    plain_step = (plain[1] - plain[0]) / (steps - steps // 2)
    return statistics.median(ours), plain_step, bandwidth_floor(checkpoint)


def decoder_weights(checkpoint: MusicgenCheckpoint) -> list[torch.Tensor]:
    linears = (torch.nn.Linear, DispatchLinear)
    return [m.weight for m in checkpoint.model.decoder.modules() if isinstance(m, linears)]


def bandwidth_floor(checkpoint: MusicgenCheckpoint) -> float:
    """One matrix-vector product with every linear weight of the decoder: reading each byte once.
    On a GPU, one kernel launch per weight is part of it."""
    weights = decoder_weights(checkpoint)
    device = checkpoint.device
    inputs = {w.shape[1]: torch.randn(1, w.shape[1], device=device, dtype=w.dtype) for w in weights}
    times = []
    with torch.inference_mode():
        for _ in range(5):
            sync(device)
            started = time.perf_counter()
            for weight in weights:
                F.linear(inputs[weight.shape[1]], weight)
            sync(device)
            times.append(time.perf_counter() - started)
    return min(times)


def percentile_row(name: str, server: list[float], static: list[float]) -> str:
    """Mean, p50 and max of both latency lists, and static/server for each."""
    cells = []
    for label, summary in (("mean", statistics.mean), ("p50", statistics.median), ("max", max)):
        ours, theirs = summary(server), summary(static)
        cells.append(f"{label} {ours:.1f} s vs {theirs:.1f} s = {theirs / ours:.2f}x")
    return f"{name}: " + "; ".join(cells)


def frame_steps(shape: str, seconds: int) -> int:
    """Decoder steps of one clip: its frames (50 a second) and the delay pattern's tail."""
    _, codec, layers = SHAPES[shape]
    frame_rate = codec["sampling_rate"] // math.prod(codec["upsampling_ratios"])
    max_delay = (layers.get("num_codebooks", 4) - 1) // layers.get("audio_channels", 1)
    return frame_rate * seconds + max_delay


def checkpoint_line(lines: list[str]) -> str:
    """The loader's ``Checkpoint: ID (device, dtype)`` line from a prediction's log."""
    return next((line for line in lines if line.startswith("Checkpoint: ")), "no checkpoint line in the log")


def largest_batch(predictions: list[Prediction]) -> int:
    """Most predictions running together, as their logs say at admission."""
    joined = [int(m) for p in predictions for m in re.findall(r"joining (\d+) running generation", p.logs or "")]
    return max(joined, default=0) + 1


@dataclass
class Plain:
    """What the in-process side measured: (a), (b), (b') and the static-batching staggered run."""

    load_lines: list[str]
    threads: int
    sequential: float
    batched: float
    selected: float
    arrivals: list[float]
    durations: list[int]
    static: list[float]
    batches: list[list[int]]


def in_process(args: argparse.Namespace, device: str) -> Plain:
    """Load the checkpoint here as the server does; time the batch-1 step, (a), (b), (b') and the
    staggered requests as static batches. Gives the device's memory back before the server starts."""
    loaded = LoadLog()
    settings = CheckpointSettings(local_dirs={hub_id(args.shape): args.dir}, device=device)
    checkpoint = runner.load(Checkpoints(settings), hub_id(args.shape), loaded)
    print(f"this process, loaded by the server's loader: {kernel_line(loaded.lines)}")
    print(f"this process, its checkpoint line:               {checkpoint_line(loaded.lines)}")
    decoder = checkpoint.model.decoder

    ours, plain_step, floor = step_times(checkpoint)
    gigabytes = sum(w.numel() * w.element_size() for w in decoder_weights(checkpoint)) / 1e9
    print(f"batch-1 step: overture {1000 * ours:.0f} ms, plain generate (F.linear) {1000 * plain_step:.0f} ms, "
          f"bandwidth floor {1000 * floor:.0f} ms -> overture {ours / floor:.2f}x floor, plain {plain_step / floor:.2f}x "
          f"(floor: {gigabytes:.2f} GB of decoder weights read once, {gigabytes / floor:.0f} GB/s)")  # fmt: skip

    audio = args.requests * args.seconds
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    set_packed_enabled(decoder, False)
    sequential = sum(generate(checkpoint, [prompt], args.seconds, i) for i, prompt in enumerate(prompts))
    print(f"(a)  plain generate, one after another, F.linear:       {sequential:7.1f} s, {audio / sequential:.3f} audio-s/s")  # fmt: skip
    batched = generate(checkpoint, prompts, args.seconds, 0)
    print(f"(b)  plain generate, one batch of {args.requests}, F.linear:          {batched:7.1f} s, {audio / batched:.3f} audio-s/s")  # fmt: skip
    set_packed_enabled(decoder, True)
    selected = generate(checkpoint, prompts, args.seconds, 0)
    print(f"(b') plain generate, one batch of {args.requests}, server's kernels:  {selected:7.1f} s, {audio / selected:.3f} audio-s/s")  # fmt: skip
    shortest = min(2, args.longest)
    spread = args.longest - shortest
    durations = [shortest + (spread * i) // max(1, args.staggered - 1) for i in range(args.staggered)]
    arrivals = [i * args.interval for i in range(args.staggered)]
    static, batches = static_batches(checkpoint, arrivals, durations) if args.staggered else ([], [])
    if checkpoint.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(checkpoint.device) / 2**30
        print(f"this process, CUDA memory allocated at most: {peak:.1f} GiB")
    del checkpoint, decoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the server's batch budget is half the device's free memory
    threads = torch.get_num_threads()
    return Plain(loaded.lines, threads, sequential, batched, selected, arrivals, durations, static, batches)


@dataclass
class Round:
    """One run of (c): the clients' poll interval, wall time, each prediction as its client saw
    it, and the CPU time the server process and its workers used meanwhile."""

    poll: float
    wall: float
    finished: list[Finished]
    server_cpu: float
    worker_cpu: float
    client_cpu: float

    @property
    def predictions(self) -> list[Prediction]:
        return [f.prediction for f in self.finished]

    def mid_run_rate(self) -> float | None:
        """The median over the predictions of the step rate their polls saw mid-run."""
        rates = [r for r in (mid_run_rate(f.polls) for f in self.finished) if r is not None]
        return statistics.median(rates) if rates else None

    def whole_rate(self, steps: int) -> float:
        """Steps over the median ``predict_time`` (text encoding and writing the WAV included)."""
        return steps / statistics.median(p.metrics["predict_time"] for p in self.predictions)


def mean_by_poll(rounds: list[Round], value: Callable[[Round], float | None]) -> dict[float, float | None]:
    """Each poll interval's mean of ``value`` over its rounds (None where a round has none)."""
    means: dict[float, float | None] = {}
    for poll in dict.fromkeys(r.poll for r in rounds):
        values = [value(r) for r in rounds if r.poll == poll]
        means[poll] = None if None in values else statistics.mean(v for v in values if v is not None)
    return means


def kernels_of(lines: list[str]) -> str:
    """The kernel choice a load log reports, in short (``onednn for 4 of 4 weight shapes``)."""
    line = kernel_line(lines)
    if not line.startswith("linear kernels: "):
        return "F.linear (no kernel choice in the load log)"
    return line.removeprefix("linear kernels: ").split(";")[0]


def threads_of(lines: list[str]) -> str:
    """The torch threads a load log's kernel report names, or ``?``."""
    found = re.search(r"; (\d+) threads", kernel_line(lines))
    return found.group(1) if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument(
        "--poll", default="0.5,0.1", help="the clients' poll intervals (s), one run of (c) each, in this order"
    )
    parser.add_argument("--staggered", type=int, default=6, help="requests in the staggered scenario (0: skip)")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between staggered arrivals")
    parser.add_argument("--longest", type=int, default=10, help="longest staggered clip (s); they start at 2 s")
    parser.add_argument("--gets", type=int, default=400, help="sequential GETs to time the server's CPU per GET")
    parser.add_argument(
        "--shape", choices=SHAPES, default="small", help="smoke shapes: small models, timings mean nothing"
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], help="here and in the server (default: the server's choice)"
    )
    parser.add_argument("--workers", choices=["process", "inline"], default="process", help="overture serve --workers")
    parser.add_argument("--no-plain", action="store_true", help="only the server's side: no (a), (b), (b'), staggered")
    parser.add_argument("--alone", action="store_true", help="also time one prediction alone, before (c)")
    parser.add_argument("--dir", type=Path, help="caches the weights (default ~/.cache/overture/musicgen-SHAPE-random)")
    args = parser.parse_args()
    polls = [float(p) for p in args.poll.split(",")]
    if not polls or min(polls) <= 0:
        parser.error("--poll: one or more intervals in seconds, greater than 0")
    # Where and in what the server's loader runs the model: the weights are drawn there and saved in it.
    placement = Checkpoints(CheckpointSettings(device=args.device))
    device, dtype = placement.device(), placement.dtype()
    dtype_name = str(dtype).removeprefix("torch.")
    suffix = "" if dtype == torch.float32 else f"-{dtype_name}"
    args.dir = args.dir or Path.home() / ".cache" / "overture" / f"musicgen-{args.shape}-random{suffix}"
    print(machine_line())
    if not (args.dir / "model.safetensors").exists() and not (args.dir / "model.safetensors.index.json").exists():
        args.dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build(args.dir, args.shape, device, dtype)
        print(f"built random musicgen-{args.shape} weights on {device} in {time.perf_counter() - started:.0f} s, "
              f"saved as {dtype_name}: {args.dir}")  # fmt: skip
    print(f"musicgen-{args.shape} shape, random weights; {args.requests} requests of {args.seconds} s, "
          f"top-k 250, guidance 3; {device}, {dtype_name}; clients polling every {' s, then '.join(f'{p:g}' for p in polls)} s; "
          f"server --workers {args.workers}")  # fmt: skip
    steps = frame_steps(args.shape, args.seconds)
    audio = args.requests * args.seconds
    plain = None if args.no_plain else in_process(args, device)
    if plain is None:
        print("(a), (b), (b') and the staggered scenario: not run (--no-plain)")

    server = Served(args.dir, args.shape, args.device, args.workers)
    where = "its worker process" if args.workers == "process" else "the server process (--workers inline)"
    try:
        warm = server.predict("warm-up: loads the checkpoint", 1, 1, polls[0]).prediction
        server_log = (warm.logs or "").splitlines()
        print(f"server, its own load log:                        {kernel_line(server_log)}")
        print(f"server, its checkpoint line:                     {checkpoint_line(server_log)}")
        if plain is not None:
            # Each load measures anew: under other load the two choices can differ.
            same = "the same" if kernel_choice(server_log) == kernel_choice(plain.load_lines) else "NOT the same"
            print(f"kernel choice per weight shape and row count, here and in the server: {same}")
        alone = None
        if args.alone:
            finished = server.predict(PROMPTS[0], 99, args.seconds, polls[0])
            alone, predict_time = finished.latency, finished.prediction.metrics["predict_time"]
            print(f"(alone) overture, 1 API prediction of {args.seconds} s, polling every {polls[0]:g} s: {alone:7.1f} s, "
                  f"{args.seconds / alone:.3f} audio-s/s; {steps} steps in a predict_time of {predict_time:.1f} s "
                  f"= {steps / predict_time:.2f} steps/s")  # fmt: skip
        rounds = []
        for poll in polls:
            jobs = [(0.0, lambda i=i, p=poll: server.predict(PROMPTS[i % len(PROMPTS)], 100 + i, args.seconds, p)) for i in range(args.requests)]  # fmt: skip
            (server_cpu, worker_cpu), client_cpu = server.tree_cpu_seconds(), cpu_seconds(os.getpid())
            wall, finished = concurrently(jobs)
            (server_after, worker_after), client_after = server.tree_cpu_seconds(), cpu_seconds(os.getpid())
            done = Round(
                poll, wall, finished, server_after - server_cpu, worker_after - worker_cpu, client_after - client_cpu
            )
            rounds.append(done)
            latencies = [f.latency for f in finished]
            mid = done.mid_run_rate()
            mid_text = f"{mid:.2f} steps/s" if mid is not None else "n/a (fewer than 3 polls mid-run)"
            predict_time = statistics.median(p.metrics["predict_time"] for p in done.predictions)
            print(f"(c)  overture, {args.requests} concurrent API predictions, polling every {poll:g} s: {wall:7.1f} s, "
                  f"{audio / wall:.3f} audio-s/s (latency median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s)")  # fmt: skip
            print(f"  server step rate in (c): mid-run {mid_text} (the median of the predictions' progress slopes, as "
                  f"their polls saw it); {steps} steps per prediction in a median predict_time of {predict_time:.1f} s "
                  f"= {done.whole_rate(steps):.2f} steps/s (predict_time includes text encoding and writing the WAV)")  # fmt: skip
            print(f"  CPU in (c): server process {done.server_cpu:.1f} s, its workers {done.worker_cpu:.1f} s, this "
                  f"process (the clients) {done.client_cpu:.1f} s; {sum(f.gets for f in finished)} polls; largest batch {largest_batch(done.predictions)} of "
                  f"{args.requests} running together (their logs: 'joining N running generation(s)')")  # fmt: skip
        walls = mean_by_poll(rounds, lambda r: r.wall)
        counts = {poll: sum(r.poll == poll for r in rounds) for poll in walls}

        def at_each_poll(throughput: Callable[[float], float]) -> str:
            cells = [f"{throughput(wall):.2f}x at {poll:g} s polling" + (f" (mean of {counts[poll]} runs)" if counts[poll] > 1 else "")
                     for poll, wall in walls.items() if wall is not None]  # fmt: skip
            return ", ".join(cells)

        serving = (f"serving: in-process vs an HTTP server on loopback, the model in {where}, {args.requests} "
                   "polling clients")  # fmt: skip
        if alone is not None:
            print(f"ratio (c)/(alone) {at_each_poll(lambda wall: args.requests * alone / wall)}  throughput of "
                  f"{args.requests} concurrent against one alone, both through the server")  # fmt: skip
        if plain is not None:
            here_kernels, server_kernels = kernels_of(plain.load_lines), kernels_of(server_log)
            on_cuda = device.startswith("cuda")
            plain_kernels = ("kernels: F.linear on both sides (the kernel choice is CPU-only)" if on_cuda else
                             f"kernels: F.linear vs the server's ({server_kernels})")  # fmt: skip
            same = kernel_choice(server_log) == kernel_choice(plain.load_lines)
            selected_kernels = (
                "kernels: F.linear on both sides (the kernel choice is CPU-only)" if on_cuda
                else f"kernels: the same choice ({server_kernels})" if same
                else f"kernels: NOT the same choice per weight shape and row count (here {here_kernels}, the server "
                f"{server_kernels}: the load logs' reports)"
            )  # fmt: skip
            threads = f"threads: {plain.threads} here vs {threads_of(server_log)} in {where} (its load log)"
            batch_static = (
                f"batch: one static batch of {args.requests} (every row as long as the longest) vs a continuous batch"
            )
            for name, seconds, batch, kernels in (
                ("(c)/(a)", plain.sequential, "batch: one request at a time vs a continuous batch", plain_kernels),
                ("(c)/(b)", plain.batched, batch_static, plain_kernels),
                ("(c)/(b')", plain.selected, batch_static, selected_kernels),
            ):
                print(f"ratio {name} {at_each_poll(lambda wall, s=seconds: s / wall)}  differs: {batch}; {kernels}; "
                      f"{threads}; {serving}")  # fmt: skip
        mids = mean_by_poll(rounds, Round.mid_run_rate)
        wholes = mean_by_poll(rounds, lambda r: r.whole_rate(steps))
        server_cpus = mean_by_poll(rounds, lambda r: r.server_cpu)
        client_cpus = mean_by_poll(rounds, lambda r: r.client_cpu)
        first = polls[0]
        for poll in list(walls)[1:]:
            cells = []
            for label, rates in (("mid-run", mids), ("whole predict_time", wholes)):
                ours, theirs = rates[poll], rates[first]
                if ours is None or theirs is None:
                    cells.append(f"{label} n/a")
                else:
                    cells.append(
                        f"{label} {ours:.2f} against {theirs:.2f} steps/s: costs {100 * (1 - ours / theirs):.1f} %"
                    )
            print(f"step rate, clients polling every {poll:g} s against every {first:g} s: {'; '.join(cells)}; CPU in (c): "
                  f"server process {server_cpus[poll]:.1f} against {server_cpus[first]:.1f} s, the clients (this process, "
                  f"same cores) {client_cpus[poll]:.1f} against {client_cpus[first]:.1f} s")  # fmt: skip
        if plain is not None and walls.get(0.5) is not None:
            ratio = plain.batched / walls[0.5]
            print(
                f"target (issue 13): (c) >= 2.5x (b) at 0.5 s polling: {ratio:.2f}x, {'met' if ratio >= 2.5 else 'NOT met'}"
            )
        if mids.get(0.5) and 0.1 in mids:
            fast = mids[0.1]
            cost = None if fast is None else 100 * (1 - fast / mids[0.5])
            verdict = "n/a" if cost is None else f"{cost:.1f} %, {'met' if cost < 5 else 'NOT met'}"
            print(f"target (issue 13): polling every 0.1 s costs < 5 % of the mid-run step rate at 0.5 s: {verdict}")
        if plain is not None and args.staggered:
            arrivals, durations, static, batches = plain.arrivals, plain.durations, plain.static, plain.batches
            jobs = [
                (arrivals[i], lambda i=i, d=d: server.predict(PROMPTS[i % len(PROMPTS)], 200 + i, d, polls[0]))
                for i, d in enumerate(durations)
            ]
            wall, finished = concurrently(jobs)
            latencies = [f.latency for f in finished]
            print(f"staggered: a request every {args.interval:g} s, {sum(durations)} audio-s, clients polling every "
                  f"{polls[0]:g} s; overture done in {wall:.1f} s, {sum(durations) / wall:.3f} audio-s/s")  # fmt: skip
            batch_of = {i: n for n, batch in enumerate(batches, 1) for i in batch}
            for i, (d, ours_s, theirs_s) in enumerate(zip(durations, latencies, static, strict=True)):
                print(f"  request {i}: {d:2d} s clip, arrived at {arrivals[i]:5.1f} s, latency overture {ours_s:6.1f} s, "
                      f"static (b') {theirs_s:6.1f} s (its batch {batch_of[i]})")  # fmt: skip
            print(f"  static (b') batches: {' '.join('[' + ','.join(map(str, b)) + ']' for b in batches)}")
            print(percentile_row("latency overture vs static (b'), static/overture", latencies, static))
            print(f"  differs: batch: static batches of what has arrived (idle time skipped) vs a continuous batch; "
                  f"{selected_kernels}; {threads}; {serving}")  # fmt: skip
        print(f"server peak resident memory, with its child processes: {server.memory.line()}")
        if args.gets:
            cpu_ms, wall_ms = server.get_cpu_ms(rounds[0].predictions[0].id, args.gets)
            print(f"server CPU per GET of a finished prediction: {cpu_ms:.2f} ms (the server process; {args.gets} sequential "
                  f"GETs from one httpx client, server otherwise idle; client wall {wall_ms:.2f} ms per GET)")  # fmt: skip
    except BaseException:
        print(f"the end of the server's log ({server.data / 'server.log'}):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()


if __name__ == "__main__":
    main()
