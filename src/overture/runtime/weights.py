"""Model weights in the Hugging Face cache (``HF_HOME``): what each model variant loads, whether it
is there, fetching it (resumably) and removing what no variant loads.

A model package declares its weights as ``HubWeights``; its loading code passes that declaration
to ``Checkpoints.path`` and ``overture pull`` passes the same one here, so the files pulled are the
files loaded. huggingface_hub is imported only when used: declaring weights must stay cheap.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from overture.errors import CheckpointMissing


@dataclass(frozen=True)
class HubWeights:
    """The files one model variant loads from one hub repo, as glob patterns over the repo's paths
    (``snapshot_download``'s ``allow_patterns`` and ``ignore_patterns``)."""

    repo: str
    files: tuple[str, ...]
    ignore: tuple[str, ...] = ()
    revision: str = "main"
    #: The hub asks for a licence to be accepted before it serves the files.
    gated: bool = False
    #: Parameters of the published checkpoint, for the memory it needs before it is pulled (once it
    #: is on disk, its safetensors headers give the exact count); None where not known.
    parameters: int | None = None

    @property
    def licence_page(self) -> str:
        return f"https://huggingface.co/{self.repo}"

    def serving(self, repo: str) -> HubWeights:
        """The same files from ``repo``, which an operator serves in this repo's place (e.g. a
        smaller checkpoint of the same family): its default branch, as its revision is not ours."""
        return self if repo == self.repo else replace(self, repo=repo, revision="main")

    def needs(self, path: str) -> bool:
        """Whether ``path`` (in the repo) is one of these files."""
        from huggingface_hub.utils import filter_repo_objects

        return any(filter_repo_objects([path], allow_patterns=list(self.files), ignore_patterns=list(self.ignore)))


class PullFailed(Exception):
    """A pull could not finish: the repo is gated, private or missing, or the hub unreachable."""


# -- what is on disk ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OnDisk:
    """One variant's weights as found locally."""

    ready: bool
    #: The operator's directory (``--checkpoint ID=DIR``) or the HF cache snapshot; None when absent.
    directory: Path | None = None
    files: tuple[Path, ...] = ()
    #: Parameters in its safetensors files, None when it has none to read.
    parameters: int | None = None
    #: Why files that are there cannot load (a safetensors header that does not read); not ready then.
    problem: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def hub_cache() -> Path:
    """The HF hub cache: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def on_disk(weights: HubWeights, local_dirs: Mapping[str, Path] | None = None) -> OnDisk:
    """Whether ``weights`` can load without the network, as ``Checkpoints.path`` would find them."""
    mapped = (local_dirs or {}).get(weights.repo)
    if mapped is not None:
        return _found(weights, mapped) if mapped.is_dir() else OnDisk(ready=False)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(
            weights.repo,
            revision=weights.revision,
            allow_patterns=list(weights.files),
            ignore_patterns=list(weights.ignore) or None,
            local_files_only=True,
        )
    except (LocalEntryNotFoundError, OSError):  # absent, or a partial snapshot
        return OnDisk(ready=False)
    return _found(weights, Path(snapshot))


def _found(weights: HubWeights, directory: Path) -> OnDisk:
    files = tuple(
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and weights.needs(path.relative_to(directory).as_posix())
    )
    tensors = [path for path in files if path.suffix == ".safetensors"]
    try:
        parameters = sum(safetensors_parameters(path) for path in tensors) if tensors else None
    except UnreadableWeights as exc:
        return OnDisk(ready=False, directory=directory, files=files, problem=str(exc))
    return OnDisk(ready=bool(files), directory=directory, files=files, parameters=parameters)


class UnreadableWeights(Exception):
    """A weights file whose safetensors header cannot be read: truncated, corrupt or not readable."""


def safetensors_parameters(path: Path) -> int:
    """The number of values in a safetensors file's tensors, read from its header alone.

    Remembered by the file's path, modification time and size: the server answers readiness on
    every ``GET`` of a model, and a large checkpoint's headers are megabytes of JSON."""
    try:
        stat = path.stat()
        counted = _header_parameters(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:  # not remembered: permissions change without touching the file
        raise UnreadableWeights(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    if isinstance(counted, str):
        raise UnreadableWeights(f"{path.name} is not a readable safetensors file: {counted}")
    return counted


@functools.lru_cache(maxsize=4096)
def _header_parameters(path: str, mtime_ns: int, size: int) -> int | str:
    """The parameters in the header of the file as it is at ``mtime_ns`` and ``size``, or what is
    wrong with that header."""
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            return f"{size} bytes, fewer than the 8 of the header's length"
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:  # read no further than the file: the length may be any junk
            return f"its header claims {length} bytes, and the file has {size - 8} after the length"
        try:
            header = json.loads(file.read(length))
        except ValueError as exc:  # not UTF-8, or not JSON
            return f"its header is not JSON ({exc})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    parameters = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            return f"tensor {name!r} has no shape"
        parameters += math.prod(shape)
    return parameters


# -- pulling -----------------------------------------------------------------------------------


def pull(weights: HubWeights, say: Callable[[str], None] = print) -> Path:
    """Download exactly ``weights``' files into the HF cache and return their snapshot directory.

    Each file goes to ``blobs/<etag>.incomplete`` before it is complete, and a later pull asks the
    hub only for the rest (an HTTP Range request), even after the process was killed: for
    multi-gigabyte checkpoints a lost connection must not mean starting again. huggingface_hub's
    own downloads keep no partial file across processes. ``snapshot_download`` then links the
    blobs into the snapshot, the same cache entries it makes itself.
    """
    from huggingface_hub import HfApi, constants, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    # huggingface_hub lets its HTTP client's transport errors through (a refused connection is its
    # ConnectError, not an OSError); it exports that client, whichever it is, as utils.httpx.
    from huggingface_hub.utils import filter_repo_objects, httpx

    try:
        api = HfApi()
        commit = api.repo_info(weights.repo, revision=weights.revision).sha
        assert commit is not None, "the hub names the commit of every revision"
        tree = api.list_repo_tree(weights.repo, revision=commit, recursive=True)
        listing = [entry for entry in tree if isinstance(entry, RepoFile)]
        wanted = list(
            filter_repo_objects(
                listing, allow_patterns=list(weights.files), ignore_patterns=list(weights.ignore), key=lambda f: f.path
            )
        )
        if not wanted:
            names = ", ".join(weights.files)
            raise PullFailed(f"{weights.repo} at {weights.revision} has none of the files {names}.")
        for entry in wanted:
            if isinstance(try_to_load_from_cache(weights.repo, entry.path, revision=commit), str):
                say(f"{entry.path}: already here")
                continue
            _fetch_blob(weights.repo, commit, entry.path, say)
        return Path(
            snapshot_download(
                weights.repo,
                revision=weights.revision,
                allow_patterns=list(weights.files),
                ignore_patterns=list(weights.ignore) or None,
            )
        )
    except GatedRepoError:
        raise PullFailed(refused_message(weights)) from None
    except RevisionNotFoundError:
        raise PullFailed(f"{weights.repo} has no revision {weights.revision} on the hub.") from None
    except RepositoryNotFoundError:
        raise PullFailed(
            f"{weights.repo} was not found on the hub, or it is private and HF_TOKEN does not give access to it."
        ) from None
    except (httpx.HTTPError, HfHubHTTPError) as exc:  # unreachable, or a hub error other than the above
        raise PullFailed(f"Could not pull {weights.repo} from {constants.ENDPOINT}: {exc}") from None


def refused_message(weights: HubWeights) -> str:
    return (
        f"The hub refused {weights.repo}: it is gated. Accept its licence at {weights.licence_page} while logged "
        "in, then set HF_TOKEN to a token of that account (or run `hf auth login`) and pull again."
    )


def _fetch_blob(repo: str, commit: str, filename: str, say: Callable[[str], None]) -> None:
    from filelock import FileLock
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils import build_hf_headers
    from tqdm import tqdm

    metadata = get_hf_file_metadata(hf_hub_url(repo, filename, revision=commit))
    if metadata.etag is None:
        raise PullFailed(f"The hub sent no ETag for {repo}/{filename}, so it cannot be cached.")
    folder = repo_folder_name(repo_id=repo, repo_type="model")
    blob = hub_cache() / folder / "blobs" / metadata.etag
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock = hub_cache() / ".locks" / folder / f"{metadata.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    # The lock huggingface_hub takes for the same blob: no two downloads append to one file.
    with FileLock(lock):
        if blob.exists():  # another download finished it while this one waited
            return
        partial = blob.with_name(f"{metadata.etag}.incomplete")
        with partial.open("ab") as file:
            have = file.tell()
            if metadata.size is not None and have > metadata.size:  # not a start of this file
                file.truncate(0)
                have = 0
            if have:
                say(f"{filename}: resuming after {have} of {metadata.size} bytes")
            http_get(
                metadata.location,
                file,
                resume_size=have,
                headers=build_hf_headers(),
                expected_size=metadata.size,
                displayed_filename=filename,
                # Plain tqdm shows its bar wherever it writes; huggingface_hub's own hides it off a
                # terminal and under some log levels, and a pull is mostly waiting on this bar.
                tqdm_class=tqdm,
            )
        partial.replace(blob)


# -- pruning -----------------------------------------------------------------------------------

#: huggingface_hub's own partial downloads (``<etag>.<8 hex>.incomplete``): unique to the process
#: that started them, so no later download resumes them.
_ABANDONED = re.compile(r"^[^.]+\.[0-9a-f]{8}\.incomplete$")


@dataclass
class Removal:
    path: Path
    bytes: int
    why: str


@dataclass
class PrunePlan:
    removals: list[Removal] = field(default_factory=list)
    #: Repos in the cache that no model declares: left alone unless asked.
    unknown: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.removals)

    def apply(self) -> None:
        for removal in self.removals:
            if removal.path.is_dir() and not removal.path.is_symlink():
                shutil.rmtree(removal.path)
            else:
                removal.path.unlink(missing_ok=True)


def prune_plan(declared: Iterable[HubWeights], include_unknown: bool = False) -> PrunePlan:
    """What in the HF cache no declared variant loads: snapshots of other revisions, files that
    match no declaration, blobs nothing links to any more, and abandoned partial downloads. Repos
    no model declares are listed, and removed only with ``include_unknown``."""
    from huggingface_hub.file_download import repo_folder_name

    by_repo: dict[str, list[HubWeights]] = {}
    for weights in declared:
        by_repo.setdefault(weights.repo, []).append(weights)
    folders = {repo_folder_name(repo_id=repo, repo_type="model"): repo for repo in by_repo}
    plan = PrunePlan()
    cache = hub_cache()
    for repo_dir in sorted(cache.glob("models--*")) if cache.is_dir() else []:
        repo = folders.get(repo_dir.name)
        if repo is None:
            name = repo_dir.name.removeprefix("models--").replace("--", "/")
            plan.unknown.append(name)
            if include_unknown:
                plan.removals.append(Removal(repo_dir, _tree_bytes(repo_dir), f"{name}: no model uses this repo"))
            continue
        plan.removals += _repo_removals(repo, repo_dir, by_repo[repo])
    return plan


def _repo_removals(repo: str, repo_dir: Path, declarations: list[HubWeights]) -> list[Removal]:
    revisions = {w.revision for w in declarations}
    kept_commits = {_commit(repo_dir, revision) for revision in revisions}
    removals: list[Removal] = []
    refs = repo_dir / "refs"
    for ref in sorted(p for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []:
        if ref.relative_to(refs).as_posix() not in revisions:
            removals.append(Removal(ref, 0, f"{repo}: ref {ref.relative_to(refs)} no model uses"))
    linked: set[str] = set()
    snapshots = repo_dir / "snapshots"
    for snapshot in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
        if snapshot.name not in kept_commits:
            removals.append(Removal(snapshot, 0, f"{repo}: revision {snapshot.name[:12]} no model uses"))
            continue
        for pointer in sorted(p for p in snapshot.rglob("*") if p.is_symlink() or p.is_file()):
            path = pointer.relative_to(snapshot).as_posix()
            if any(w.needs(path) for w in declarations if _commit(repo_dir, w.revision) == snapshot.name):
                linked.add(os.path.realpath(pointer))
            else:
                removals.append(Removal(pointer, 0, f"{repo}: {path} is not loaded by any model"))
    blobs = repo_dir / "blobs"
    for blob in sorted(blobs.iterdir()) if blobs.is_dir() else []:
        if blob.name.endswith(".incomplete"):
            if _ABANDONED.match(blob.name):
                removals.append(Removal(blob, blob.stat().st_size, f"{repo}: abandoned partial download"))
        elif os.path.realpath(blob) not in linked:
            removals.append(Removal(blob, blob.stat().st_size, f"{repo}: blob no kept file links to"))
    return removals


def _commit(repo_dir: Path, revision: str) -> str:
    ref = repo_dir / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else revision


def _tree_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def path_in_cache(weights: HubWeights, offline: bool) -> Path:
    """``weights``' snapshot directory, downloaded unless ``offline``; used by ``Checkpoints.path``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                weights.repo,
                revision=weights.revision,
                local_files_only=offline,
                allow_patterns=list(weights.files),
                ignore_patterns=list(weights.ignore) or None,
            )
        )
    except GatedRepoError:
        raise CheckpointMissing(refused_message(weights)) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointMissing(_missing_message(weights, exc)) from None


def _missing_message(weights: HubWeights, exc: Exception) -> str:
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    gated = (
        f" It is gated on the hub: accept its licence at {weights.licence_page} and set HF_TOKEN."
        if weights.gated
        else ""
    )
    return (
        f"Checkpoint {weights.repo} is not available: it is not in the Hugging Face cache ({cache}) and could not be "
        f"downloaded ({type(exc).__name__}).{gated} Download it with `overture pull` (`overture models --local` "
        f"says which model uses it), or point the server at a local copy: "
        f"`overture serve --checkpoint {weights.repo}=/path/to/dir`."
    )
