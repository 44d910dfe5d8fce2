"""Serving an exported model with onnxruntime: device choice, threads and bounded memory, no torch.

The ONNX file (written by :mod:`onnx_export`) carries the model card and the model cut into stages
(per-node stages and per-edge stages that read a per-node table, see ``onnx_export/stages.py``).
:class:`OnnxScorer` runs each stage over the graph ``chunk_edges`` edges at a time and keeps only
per-node results between stages, so memory grows with ``N * hidden``, not ``N * k * hidden``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import logging
import threading
from collections.abc import Callable
from numbers import Integral
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from .errors import InputError, MissingExtraError, ModelError
from .features import EDGE_FEATURES, LevelInputs, node_width
from .model_card import ModelCard, check_format, check_same_model, packaged_file, read_card
from .validate import check_neighbours

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CARD_KEY = "qdrant_lander.card"
STAGES_KEY = "qdrant_lander.stages"
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# TF32 matmuls (onnxruntime's CUDA default) move link probabilities by up to ~1e-3 against the CPU, enough to flip
# edges near tau; off, the GPU matches the CPU to ~2e-7 at no measured cost (H200, 1M nodes 1.48 vs 1.50 s).
CUDA_OPTIONS = {"use_tf32": "0"}
RUNTIME_DISTS = ("onnxruntime", "onnxruntime-gpu")
DEFAULT_CHUNK_EDGES = 1 << 15  # CPU: ~100 MB peak working memory with the default widths; bigger is not faster
# GPU: a run's launches and copies cost more than its arithmetic, so runs are 32x larger (H200: 1.6-2.0x the 16-core
# CPU at 100k-1M nodes, against 1.1-1.3x at the CPU's chunk; RESULTS.md "Session 40")
DEFAULT_CUDA_CHUNK_EDGES = 1 << 20
BLOCK_EDGES = 1 << 20  # edges whose features level 0 builds at once (score_in_blocks): 80 MB of float32


def _onnxruntime(device: Device):
    """Import onnxruntime (from either the ``cpu`` or the ``gpu`` extra; never both)."""
    try:
        import onnxruntime
    except ImportError:
        extra = "gpu" if device == "cuda" else "cpu"
        raise MissingExtraError(
            f'running a model needs onnxruntime: pip install "qdrant-lander[{extra}]" '
            '(use [gpu] instead of [cpu] for CUDA; never install both)') from None
    if both := _both_runtimes_installed():
        log.warning("%s are both installed: they provide one module, and whichever pip wrote last is the one in "
                    "use (CUDA may be missing); uninstall both and install one", both)
    return onnxruntime


def _installed(dists: tuple[str, ...]) -> dict[str, str]:
    """The installed ones of ``dists`` and their versions (read from package metadata: nothing is imported)."""
    found = {}
    for dist in dists:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _both_runtimes_installed() -> str:
    """'onnxruntime and onnxruntime-gpu' when both distributions are installed, else ''."""
    found = _installed(RUNTIME_DISTS)
    return " and ".join(found) if len(found) == 2 else ""


def default_model_path() -> Path:
    """The model shipped in the package (``qdrant_lander/models/default.onnx``)."""
    return packaged_file("default.onnx", "default model",
                         "; pass a model file or directory, or train one with `qdrant-lander train`")


_PRELOAD_LOCK = threading.Lock()


def _load_cuda_libraries(ort) -> None:
    """Load the CUDA and cuDNN libraries that pip installed (nvidia-* wheels) into this process.

    onnxruntime-gpu's CUDA provider links them by name and finds them only on the system's library path or once
    loaded; ``import torch`` loads them, but serving has no torch. ``preload_dlls`` (onnxruntime >= 1.21) loads
    them and prints what it could not find to stdout, which would break ``--json``: that goes to the log.
    ``sys.stdout`` is the process's, so scorers loaded at once from several threads take turns (interleaved, the
    last to finish would put another's StringIO back as stdout for good); a print of another thread meanwhile still
    goes to the log with preload_dlls's output.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    said = io.StringIO()
    with _PRELOAD_LOCK, contextlib.redirect_stdout(said):
        try:
            preload(msvc=False)
        except Exception as e:  # noqa: BLE001 - best effort: the session below says whether CUDA really started
            print(e)
    if said.getvalue().strip():
        log.info("onnxruntime.preload_dlls: %s", " ".join(said.getvalue().split()))


def _session(ort, path: Path, device: Device, threads: int | None):
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, not {device!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 1):
        raise InputError(f"threads must be a whole number of at least 1, got {threads!r}")
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise MissingExtraError('device "cuda" needs onnxruntime with CUDA: pip uninstall onnxruntime && '
                                'pip install "qdrant-lander[gpu]"')
    providers = [CUDA, CPU] if device != "cpu" and CUDA in available else [CPU]
    if CUDA in providers:
        _load_cuda_libraries(ort)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the inputs' defaults (see onnx_export) each raise a warning
    if threads is not None:
        options.intra_op_num_threads = int(threads)  # a numpy integer is refused by onnxruntime
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")

    def load(chosen: list[str]):
        # enable_fallback=0: onnxruntime's own fallback prints a banner to stdout (breaking --json) and may move a
        # session to CPU in the middle of a run, behind the provider we report; falling back is done here instead.
        with_options = [(name, CUDA_OPTIONS) if name == CUDA else name for name in chosen]
        return ort.InferenceSession(str(path), sess_options=options, providers=with_options, enable_fallback=0)

    cuda_error = None
    try:
        try:
            session = load(providers)
        except Exception as e:  # noqa: BLE001 - a CUDA provider that fails to start (driver, libraries) raises here
            if CUDA not in providers:
                raise
            cuda_error, session = e, load([CPU])
    except Exception as e:  # onnxruntime raises its own untyped errors for unreadable files
        raise ModelError(f"cannot load ONNX model {path}: {e}") from e
    # onnxruntime-gpu lists CUDA as available even without a GPU; the session tells what it really got.
    got = session.get_providers()[0]
    why = f": {cuda_error}" if cuda_error else " (no GPU, driver, or CUDA/cuDNN libraries?)"
    if device == "auto" and CUDA in providers and got != CUDA:
        log.warning("onnxruntime lists CUDA but could not use it%s; running on %s", why, got)
    if device == "cuda" and got != CUDA:
        raise InputError(f"device 'cuda' requested but onnxruntime could not use a GPU (session got {got}{why}); "
                         "check the NVIDIA driver and CUDA/cuDNN libraries, or use --device cpu")
    return session, got


def _card(meta: dict[str, str], path: Path) -> ModelCard:
    if CARD_KEY not in meta or STAGES_KEY not in meta:
        raise ModelError(f"{path} is not a qdrant-lander model (no model card in its metadata); "
                         "export it with `qdrant-lander export`")
    return read_card(meta[CARD_KEY], path)


class OnnxScorer:
    """A :data:`~qdrant_lander.decode.Scorer` backed by onnxruntime.

    ``device``: ``cpu``, ``cuda`` (an error if no GPU can be used) or ``auto`` (CUDA only if the
    session really got it). ``threads`` sets onnxruntime's intra-op threads (default: its own
    choice, one per physical core). ``chunk_edges`` bounds how many edges one run touches (default: by device,
    :data:`DEFAULT_CHUNK_EDGES` on the CPU, :data:`DEFAULT_CUDA_CHUNK_EDGES` on a GPU). ``card``
    replaces the file's card (same model, other decoding settings, e.g. from ``Lander.calibrate``).
    ``provider`` says which execution provider is in use.
    """

    def __init__(self, path: str | Path, device: Device = "auto", threads: int | None = None,
                 chunk_edges: int | None = None, card: ModelCard | None = None) -> None:
        if chunk_edges is not None and chunk_edges < 1:
            raise InputError(f"chunk_edges must be at least 1, got {chunk_edges}")
        self.path = Path(path)
        self._ort = _onnxruntime(device)
        self._session, self.provider = _session(self._ort, self.path, device, threads)
        self._device = "cuda" if self.provider == CUDA else "cpu"
        self.card = _card(self._session.get_modelmeta().custom_metadata_map, self.path)
        if card is not None:  # the same weights with other decoding settings (a calibrated model directory)
            check_format(card, self.path)
            check_same_model(card, self.card, self.path)
            self.card = card
        self._stages: list[dict] = json.loads(self._session.get_modelmeta().custom_metadata_map[STAGES_KEY])
        self.chunk_edges = chunk_edges or (DEFAULT_CUDA_CHUNK_EDGES if self.provider == CUDA else DEFAULT_CHUNK_EDGES)
        # every input has a default (see onnx_export), so onnxruntime lists them as overridable initializers
        self._inputs = {i.name: i for i in self._session.get_overridable_initializers()}
        self._outputs = {o.name: o for o in self._session.get_outputs()}
        self._check_widths()
        log.info("model '%s' from %s on %s", self.card.name, self.path, self.provider)

    @classmethod
    def default(cls, device: Device = "auto", threads: int | None = None, **kwargs) -> OnnxScorer:
        """The model shipped with the package."""
        return cls(default_model_path(), device=device, threads=threads, **kwargs)

    def _value(self, array: np.ndarray):
        return self._ort.OrtValue.ortvalue_from_numpy(array, self._device, 0)

    def _width(self, name: str) -> int:
        return int(self._inputs[name].shape[-1])

    def _check_widths(self) -> None:
        """The file's input widths against its card's node mode and dimension: a model whose card describes other
        weights would otherwise fail deep inside onnxruntime on the first pass (in a daemon: read as a store error)."""
        dim = self.card.input_dim if self.card.input_dim != "any" else 0
        expected = {"x": node_width(self.card.node_mode, dim), "edge_attr": len(EDGE_FEATURES)}
        wrong = {name: (self._width(name), width) for name, width in expected.items() if self._width(name) != width}
        if wrong:
            said = ", ".join(f"{name} {got} wide, its card says {width}" for name, (got, width) in wrong.items())
            raise ModelError(f"{self.path} does not match its model card ({said}): re-export it with "
                             "`qdrant-lander export`")

    def _check(self, inputs: LevelInputs) -> None:
        n, k = inputs.nbr.shape
        expected = {"x": (n, self._width("x")), "sim": (n, k), "edge_attr": (n, k, self._width("edge_attr"))}
        for name, shape in expected.items():
            got = getattr(inputs, name).shape
            if got != shape:
                raise ModelError(f"model '{self.card.name}' expects {name} of shape {shape}, got {got}")
        check_neighbours(inputs.nbr, n)

    def _run(self, stage: dict, table: np.ndarray, rows: np.ndarray | None, edges: dict[str, np.ndarray],
             shared: object | None) -> list[np.ndarray]:
        """One stage over ``rows`` (default: all of ``table``), ``chunk_edges`` edges per run; ``edges``
        holds the rows' own ``nbr``/``sim``(/``edge_attr``) and ``shared`` the uploaded full table."""
        name = stage["name"]
        n = len(table) if rows is None else len(rows)
        k = edges["nbr"].shape[1] if edges else 1
        out_names = [o for o in self._outputs if o.startswith(name + ".")]
        outs = [np.empty((n, k) if o.endswith(".link") else (n, *self._outputs[o].shape[1:]), np.float32)
                for o in out_names]
        step = max(1, self.chunk_edges // k)
        no_edge_attr = (np.zeros((min(step, n), k, self._width("edge_attr")), np.float32)
                        if stage["kind"] == "edge" and "edge_attr" not in edges else None)
        for a in range(0, n, step):
            part = slice(a, a + step)
            own = table[part] if rows is None else table[rows[part]]
            feed = {f"{name}.self": self._value(np.ascontiguousarray(own))}
            if stage["kind"] == "edge":
                feed[f"{name}.table"] = shared
                for role, array in edges.items():
                    feed[f"{name}.{role}"] = self._value(np.ascontiguousarray(array[part]))
                if no_edge_attr is not None:  # unread before the head, but the export ties k to its shape
                    feed[f"{name}.edge_attr"] = self._value(no_edge_attr[:len(own)])
            for out, value in zip(outs, self._session.run_with_ort_values(out_names, feed)):
                out[part] = value.numpy()
        return outs

    def node_table(self, x: np.ndarray, nbr: np.ndarray, sim: np.ndarray) -> np.ndarray:
        """Every stage before the link head, over all nodes: the per-node table :meth:`head` reads.

        Only the head reads edge features (``onnx_export/stages.py``), so none are needed here.
        """
        table = np.ascontiguousarray(x, dtype=np.float32)
        edges = {"nbr": np.ascontiguousarray(nbr, dtype=np.int64), "sim": np.ascontiguousarray(sim, dtype=np.float32)}
        for stage in self._stages[:-1]:
            shared = self._value(table) if stage["kind"] == "edge" else None  # uploaded once per stage
            (table,) = self._run(stage, table, None, edges if stage["kind"] == "edge" else {}, shared)
        return table

    def head(self, table: np.ndarray, nbr: np.ndarray, sim: np.ndarray, edge_attr: np.ndarray,
             rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(link probability [R, k], density [R]) of ``rows`` (default: all nodes) from a
        :meth:`node_table`; ``nbr``, ``sim`` and ``edge_attr`` are those rows' own. Scoring a few rows
        of a big graph (an incremental pass) costs those rows' edges only."""
        edges = {"nbr": np.asarray(nbr, dtype=np.int64), "sim": np.asarray(sim, dtype=np.float32),
                 "edge_attr": np.asarray(edge_attr, dtype=np.float32)}
        link, density = self._run(self._stages[-1], table, rows, edges, self._value(table))
        return link, density

    def score_in_blocks(self, x: np.ndarray, nbr: np.ndarray, sim: np.ndarray,
                        edge_attr_of: Callable[[np.ndarray], np.ndarray],
                        block_chunks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`__call__`, but each block of rows gets its edge features (``edge_attr_of(rows)``) only
        when the head reaches it: they are a level's largest input (1.5 GB at a million nodes, k 20) and
        only the head reads them. Blocks are whole chunks (default: as many as hold :data:`BLOCK_EDGES`
        edges, at least one), so the results equal :meth:`__call__`'s."""
        table = self.node_table(x, nbr, sim)
        n, k = nbr.shape
        block = max(1, self.chunk_edges // k) * (block_chunks or max(1, BLOCK_EDGES // self.chunk_edges))
        link, density = np.empty((n, k), dtype=np.float32), np.empty(n, dtype=np.float32)
        for start in range(0, n, block):
            rows = np.arange(start, min(n, start + block))
            link[rows], density[rows] = self.head(table, nbr[rows], sim[rows], edge_attr_of(rows), rows)
        return link, density

    def __call__(self, inputs: LevelInputs) -> tuple[np.ndarray, np.ndarray]:
        """(link probability float32 [N, k], density float32 [N]) for one level's inputs."""
        self._check(inputs)
        table = self.node_table(inputs.x, inputs.nbr, inputs.sim)
        return self.head(table, inputs.nbr, inputs.sim, inputs.edge_attr)


class RuntimeInfo(BaseModel):
    """What a model is served with here (``qdrant-lander config runtime``): the first thing to check when a GPU seems
    unused, and what to paste into a bug report."""

    packages: dict[str, str]  # installed onnxruntime builds, and torch / torch-geometric when the train extra is there
    available_providers: list[str]  # what onnxruntime offers (onnxruntime-gpu lists CUDA even without a GPU)
    device: str  # what was asked for
    provider: str  # what the model's session really got
    chunk_edges: int
    threads: int | None
    model: str
    model_path: str


def runtime_info(scorer: OnnxScorer, device: str, threads: int | None) -> RuntimeInfo:
    """:class:`RuntimeInfo` of a loaded scorer (``device`` and ``threads`` as it was asked for)."""
    return RuntimeInfo(packages=_installed((*RUNTIME_DISTS, "torch", "torch-geometric")),
                       available_providers=scorer._ort.get_available_providers(), device=device,
                       provider=scorer.provider, chunk_edges=scorer.chunk_edges, threads=threads,
                       model=scorer.card.name, model_path=str(scorer.path))
