"""Export a trained LanderNet to one self-contained ONNX file.

The file holds one graph with two entry points sharing the same weights:

* the plain model: inputs ``x, nbr, sim, edge_attr`` -> outputs ``link, density`` (any N, any k),
  for anyone who just wants to run it with onnxruntime;
* the model's stages (see :mod:`onnx_export.stages`), inputs ``<stage>.self`` (+ ``<stage>.table``,
  ``.nbr``, ``.sim``, ``.edge_attr`` for edge stages), which ``qdrant_lander.runtime`` runs in row
  chunks so memory stays bounded on big graphs. Their order is in the metadata key
  ``qdrant_lander.stages``.

Every input has a one-row default value (an initializer of the same name), so each entry point can
be run alone, feeding only its own inputs.

The model card travels in the metadata too (``qdrant_lander.card`` as JSON, plus a few plain keys
for tools that only show strings), so the file alone is enough to serve the model.

Uses torch's dynamo exporter: it is the one that keeps N and k dynamic without tracing tricks.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from torch import nn

from qdrant_lander.model_card import ModelCard
from qdrant_lander.runtime import CARD_KEY, STAGES_KEY
from qdrant_lander.training.model import LanderNet

from .stages import Stage, stages

log = logging.getLogger(__name__)

OPSET = 18
EDGE_ROLES = ("self", "table", "nbr", "sim", "edge_attr")

# Example sizes for tracing; deliberately all different (tables get _N + stage number rows) so no
# dimension gets specialised or tied to another by accident.
_N, _ROWS, _K = 50, 20, 10


class _AllEntryPoints(nn.Module):
    """Plain forward and every stage, side by side, so one export writes them with shared weights."""

    def __init__(self, net: LanderNet, parts: list[Stage]) -> None:
        super().__init__()
        self.net, self.parts = net, nn.ModuleList(parts)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = list(self.net(*inputs[:4]))
        pos = 4
        for part in self.parts:
            n_in = 1 if part.kind == "node" else len(EDGE_ROLES)
            out = part(*inputs[pos:pos + n_in])
            outs.extend(out if isinstance(out, tuple) else [out])
            pos += n_in
        return tuple(outs)


def _examples(net: LanderNet, parts: list[Stage]):
    """Example inputs, names, dynamic shapes and output names for every entry point."""
    c = net.config
    gen = torch.Generator().manual_seed(0)

    def edge_inputs(rows: int, n: int) -> list[torch.Tensor]:
        return [torch.randint(0, n, (rows, _K), generator=gen), torch.rand(rows, _K, generator=gen),
                torch.randn(rows, _K, c.edge_dim, generator=gen)]

    args = [torch.randn(_N, c.node_dim, generator=gen), *edge_inputs(_N, _N)]
    names = ["x", "nbr", "sim", "edge_attr"]
    nodes, k = torch.export.Dim("nodes"), torch.export.Dim("k")
    shapes: list[dict] = [{0: nodes}, {0: nodes, 1: k}, {0: nodes, 1: k}, {0: nodes, 1: k}]
    out_names = ["link", "density"]
    width = c.node_dim
    with torch.no_grad():
        for i, part in enumerate(parts, start=1):
            rows = torch.export.Dim(f"{part.name}_rows")
            table = torch.randn(_N + i, width, generator=gen)
            if part.kind == "node":
                part_args, part_shapes = [table[:_ROWS]], [{0: rows}]
            else:
                pn, pk = torch.export.Dim(f"{part.name}_nodes"), torch.export.Dim(f"{part.name}_k")
                part_args = [table[:_ROWS], table, *edge_inputs(_ROWS, _N + i)]
                part_shapes = [{0: rows}, {0: pn}, {0: rows, 1: pk}, {0: rows, 1: pk}, {0: rows, 1: pk}]
            out = part(*part_args)
            args += part_args
            shapes += part_shapes
            roles = ["self"] if part.kind == "node" else list(EDGE_ROLES)
            names += [f"{part.name}.{r}" for r in roles]
            if isinstance(out, tuple):
                out_names += [f"{part.name}.link", f"{part.name}.density"]
            else:
                out_names.append(f"{part.name}.out")
                width = out.shape[-1]
    return tuple(args), names, tuple(shapes), out_names


def _add_input_defaults(model: onnx.ModelProto) -> None:
    """Give every graph input a one-row, one-neighbour default (indices 0), so onnxruntime does not
    require the inputs of the entry points a run does not use. A table is as wide as its stage's rows."""
    inputs = {i.name: i for i in model.graph.input}
    for name, value in inputs.items():
        like = inputs[name.removesuffix(".table") + ".self"] if name.endswith(".table") else value
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in like.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(shape, dtype), name))


def _git_revision() -> str:
    """The source revision this export comes from, when it is a qdrant-lander git checkout (an installed copy
    inside some other repository, e.g. a project's own virtual environment, must not report that one's commit)."""
    source = Path(__file__).resolve().parent.parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=source,
                             capture_output=True, text=True, timeout=10, check=True)
        if Path(top.stdout.strip()).resolve() != source:
            return "unknown"
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source,
                             capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def export_onnx(net: LanderNet, card: ModelCard, path: str | Path) -> ModelCard:
    """Write ``net`` with ``card`` in its metadata to ``path``; return the card as stored.

    The card's ``revision`` is filled from git when it says "unknown". The file is checked with
    ``onnx.checker`` and written atomically (a failed export leaves no file behind).
    """
    path = Path(path)
    if card.revision == "unknown":
        card = card.model_copy(update={"revision": _git_revision()})
    parts = stages(net)
    was_training = net.training
    net.eval()
    args, names, shapes, out_names = _examples(net, parts)
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    registry_level = registry_log.level
    registry_log.setLevel(logging.ERROR)  # "torchvision is not installed" lines, irrelevant here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
            program = torch.onnx.export(_AllEntryPoints(net, parts), args, dynamo=True, opset_version=OPSET,
                                        input_names=names, output_names=out_names, dynamic_shapes=(shapes,),
                                        verbose=False)
    finally:
        net.train(was_training)
        registry_log.setLevel(registry_level)
    model = program.model_proto
    _add_input_defaults(model)
    meta = {
        CARD_KEY: card.model_dump_json(),
        STAGES_KEY: json.dumps([{"name": p.name, "kind": p.kind} for p in parts]),
        "format_version": str(card.format_version),
        "input_dim": str(card.input_dim),
        "k": str(card.k),
        "tau": repr(card.tau),
        "max_levels": str(card.max_levels),
        "trained_on": ",".join(card.trained_on),
        "revision": card.revision,
    }
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    model.doc_string = f"qdrant-lander model '{card.name}': LANDER link and density scorer"
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(model.SerializeToString())
    os.chmod(tmp.name, 0o644)  # a model is meant to be shared; temp files start owner-only
    Path(tmp.name).replace(path)
    log.info("exported model '%s' to %s (%d stages, opset %d)", card.name, path, len(parts), OPSET)
    return card
