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
  (c)  Overture serving them as concurrent API predictions: a real server subprocess on loopback,
       driven by the real ``replicate`` client from one thread per request.

(c)/(b) is the gain over what a user would script, kernels included; (c)/(b') is the gain of the
serving loop alone, on the same kernels. Each ratio line says what differs between its two sides.

Each request has its own prompt and seed (top-k 250, guidance 3); the clients poll at the
``replicate`` client's own interval (0.5 s, ``REPLICATE_POLL_INTERVAL``). Throughput is audio
seconds per wall second. First the batch-1 decoder step: Overture's loop against plain
``generate`` with ``F.linear``, and both against the memory-bandwidth floor (one matrix-vector
pass over every decoder weight, measured here).

A second scenario submits requests at intervals with durations of 2 to 10 s (``--longest``): each one's latency
(finish - arrival) at the server, against (b') run as a static-batching server would run it
(whenever the previous batch has finished, every request that has arrived so far runs as one
``generate`` batch, as long as its longest clip; a clock that skips idle time). Then the server's
step rate, peak resident memory (VmHWM) and CPU time per GET of a finished prediction.

On a GPU (``--device cuda``; by default the server's own choice, CUDA when there is one) both
sides run in the dtype the server's loader picks there (bfloat16 where supported, else float16),
the linear kernels are plain ``F.linear`` (the kernel choice is CPU-only), and every timing waits
for the device. ``--no-plain`` runs only the server's side ((c), without the plain-``generate``
comparisons and the staggered scenario, which needs (b')), and ``--alone`` first times one
prediction alone, so that (c) can be set against it: ``benchmarks/gpu.sh`` runs a 30 s
stereo-large prediction this way, alone and with 16 concurrent.

    .venv/bin/python benchmarks/batching.py [--requests 8] [--seconds 5] [--staggered 6]
        [--interval 4] [--longest 10] [--gets 400] [--shape small|large|stereo-large|smoke|stereo-smoke]
        [--device cpu|cuda] [--no-plain] [--alone] [--dir DIR]
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
from _machine import machine_line  # noqa: E402
from musicgen import MODEL_VERSIONS, SHAPES, Context, build, hub_id  # noqa: E402
from replicate.prediction import Prediction  # noqa: E402

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


class Served:
    """A real Overture server on loopback, serving the checkpoint in ``directory``."""

    def __init__(self, directory: Path, shape: str, device: str | None):
        self.data = Path(tempfile.mkdtemp(prefix="overture-batching-"))
        self.model_version = MODEL_VERSIONS[shape]
        port = 18000 + os.getpid() % 1000
        self.url = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "overture", "serve", "--port", str(port), "--data-dir", str(self.data)]
        args += ["--token", TOKEN, "--checkpoint", f"{hub_id(shape)}={directory}", "--no-cache"]
        env = {**os.environ, "OVERTURE_DEVICE": device} if device else None
        self.log = open(self.data / "server.log", "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {self.data / 'server.log'}")

    def predict(self, prompt: str, seed: int, seconds: int) -> tuple[float, Prediction]:
        """One prediction start to finish: its latency, and the prediction as it ended."""
        started = time.perf_counter()
        prediction = replicate.Client(api_token=TOKEN, base_url=self.url).predictions.create(
            model="meta/musicgen",
            input={"prompt": prompt, "model_version": self.model_version, "duration": seconds, "seed": seed},
        )
        prediction.wait()
        if prediction.status != "succeeded":
            raise RuntimeError(f"prediction {prediction.id} {prediction.status}: {prediction.error}")
        return time.perf_counter() - started, prediction

    def peak_rss_gib(self) -> float:
        """The server process's resident-memory high-water mark so far (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        return kilobytes / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def get_cpu_ms(self, prediction_id: str, count: int) -> tuple[float, float]:
        """Server CPU and client wall time per GET of one prediction, ``count`` sequential GETs."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.url, headers=headers) as http:
            http.get(f"/v1/predictions/{prediction_id}").raise_for_status()
            cpu, wall = self.cpu_seconds(), time.perf_counter()
            for _ in range(count):
                http.get(f"/v1/predictions/{prediction_id}").raise_for_status()
            wall, cpu = time.perf_counter() - wall, self.cpu_seconds() - cpu
        return 1000 * cpu / count, 1000 * wall / count

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's own log (stdout and stderr), for a run that failed."""
        return "\n".join((self.data / "server.log").read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


Job = Callable[[], tuple[float, Prediction]]


def concurrently(jobs: list[tuple[float, Job]]) -> tuple[float, list[float], list[Prediction]]:
    """Start each job at its delay (seconds from now) on its own thread; wall time, latencies and
    predictions. A job that fails leaves no latency to average: the run stops."""
    results: dict[int, tuple[float, Prediction]] = {}
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
    return wall, [results[i][0] for i in range(len(jobs))], [results[i][1] for i in range(len(jobs))]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--staggered", type=int, default=6, help="requests in the staggered scenario (0: skip)")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between staggered arrivals")
    parser.add_argument("--longest", type=int, default=10, help="longest staggered clip (s); they start at 2 s")
    parser.add_argument("--gets", type=int, default=400, help="sequential GETs to time the server's CPU per GET")
    parser.add_argument("--shape", choices=SHAPES, default="small", help="smoke shapes: small models, timings mean nothing")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="here and in the server (default: the server's choice)")
    parser.add_argument("--no-plain", action="store_true", help="only the server's side: no (a), (b), (b'), staggered")
    parser.add_argument("--alone", action="store_true", help="also time one prediction alone, before (c)")
    parser.add_argument("--dir", type=Path, help="caches the weights (default ~/.cache/overture/musicgen-SHAPE-random)")
    args = parser.parse_args()
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
          f"top-k 250, guidance 3; {device}, {dtype_name}")  # fmt: skip
    steps = frame_steps(args.shape, args.seconds)
    audio = args.requests * args.seconds
    plain = None if args.no_plain else in_process(args, device)
    if plain is None:
        print("(a), (b), (b') and the staggered scenario: not run (--no-plain)")

    server = Served(args.dir, args.shape, args.device)
    try:
        _, warm = server.predict("warm-up: loads the checkpoint", 1, 1)
        server_log = (warm.logs or "").splitlines()
        print(f"server, its own load log:                        {kernel_line(server_log)}")
        print(f"server, its checkpoint line:                     {checkpoint_line(server_log)}")
        if plain is not None:
            # Each load measures anew: under other load the two choices can differ.
            same = "the same" if kernel_choice(server_log) == kernel_choice(plain.load_lines) else "NOT the same"
            print(f"kernel choice per weight shape and row count, here and in the server: {same}")
        alone = None
        if args.alone:
            alone, prediction = server.predict(PROMPTS[0], 99, args.seconds)
            predict_time = prediction.metrics["predict_time"]
            print(f"(alone) overture, 1 API prediction of {args.seconds} s: {alone:7.1f} s, "
                  f"{args.seconds / alone:.3f} audio-s/s; {steps} steps in a predict_time of {predict_time:.1f} s "
                  f"= {steps / predict_time:.2f} steps/s")  # fmt: skip
        jobs = [(0.0, lambda i=i: server.predict(PROMPTS[i % len(PROMPTS)], 100 + i, args.seconds)) for i in range(args.requests)]  # fmt: skip
        served, latencies, predictions = concurrently(jobs)
        print(f"(c)  overture, {args.requests} concurrent API predictions:     {served:7.1f} s, {audio / served:.3f} audio-s/s "
              f"(latency median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s)")  # fmt: skip
        predict_time = statistics.median(p.metrics["predict_time"] for p in predictions)
        print(f"server step rate in (c): {steps} steps per prediction in a median predict_time of {predict_time:.1f} s "
              f"= {steps / predict_time:.2f} steps/s (predict_time includes text encoding and writing the WAV)")  # fmt: skip
        print(f"largest batch in (c): {largest_batch(predictions)} of {args.requests} predictions running together "
              "(from their logs: 'joining N running generation(s)')")  # fmt: skip
        if alone is not None:
            print(f"ratio (c)/(alone) {args.requests * alone / served:.2f}x  throughput of {args.requests} concurrent "
                  "against one alone, both through the server")  # fmt: skip
        if plain is not None:
            sequential, batched, selected = plain.sequential, plain.batched, plain.selected
            same = "the same" if kernel_choice(server_log) == kernel_choice(plain.load_lines) else "NOT the same"
            print(f"ratio (c)/(a) {sequential / served:.2f}x  differs: kernels (server's vs F.linear), one request at a time "
                  f"vs continuous batch, in-process vs HTTP server with polling clients")  # fmt: skip
            print(f"ratio (c)/(b) {batched / served:.2f}x  differs: kernels (server's vs F.linear), one static batch "
                  f"vs continuous batch, in-process vs HTTP server with polling clients")  # fmt: skip
            print(f"ratio (c)/(b') {selected / served:.2f}x  differs: one static batch vs continuous batch, in-process vs "
                  f"HTTP server with polling clients; kernels {same} (choice above), threads as the load logs say")  # fmt: skip
        if plain is not None and args.staggered:
            arrivals, durations, static, batches = plain.arrivals, plain.durations, plain.static, plain.batches
            jobs = [
                (arrivals[i], lambda i=i, d=d: server.predict(PROMPTS[i % len(PROMPTS)], 200 + i, d))
                for i, d in enumerate(durations)
            ]
            wall, latencies, _ = concurrently(jobs)
            print(f"staggered: a request every {args.interval:g} s, {sum(durations)} audio-s; overture done in {wall:.1f} s, "
                  f"{sum(durations) / wall:.3f} audio-s/s")  # fmt: skip
            batch_of = {i: n for n, batch in enumerate(batches, 1) for i in batch}
            for i, (d, ours_s, theirs_s) in enumerate(zip(durations, latencies, static, strict=True)):
                print(f"  request {i}: {d:2d} s clip, arrived at {arrivals[i]:5.1f} s, latency overture {ours_s:6.1f} s, "
                      f"static (b') {theirs_s:6.1f} s (its batch {batch_of[i]})")  # fmt: skip
            print(f"  static (b') batches: {' '.join('[' + ','.join(map(str, b)) + ']' for b in batches)}")
            print(percentile_row("latency overture vs static (b'), static/overture", latencies, static))
            print("  differs: continuous batch (HTTP server, polling clients) vs static batches of what has arrived "
                  f"(in-process, idle time skipped); kernels {same}; {plain.threads} threads here")  # fmt: skip
        print(f"server peak resident memory (VmHWM): {server.peak_rss_gib():.1f} GiB")
        if args.gets:
            cpu_ms, wall_ms = server.get_cpu_ms(predictions[0].id, args.gets)
            print(f"server CPU per GET of a finished prediction: {cpu_ms:.2f} ms ({args.gets} sequential GETs from one "
                  f"httpx client, server otherwise idle; client wall {wall_ms:.2f} ms per GET)")  # fmt: skip
    except BaseException:
        print(f"the end of the server's log ({server.data / 'server.log'}):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()


if __name__ == "__main__":
    main()
