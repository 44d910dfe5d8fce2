"""LanderNet cut into stages that can each run on a slice of rows, for bounded-memory serving.

One forward over a 1M-node graph materialises several ``[N*k, hidden]`` edge tensors (gigabytes).
Chunking rows of the whole model is wrong for a GNN: a row's output needs its neighbours' hidden
states, which need *their* neighbours. So the model is cut where it gathers:

* a **node** stage maps a node's own features to new ones (no neighbours involved);
* an **edge** stage computes rows ``R`` from their own features (``self``), a full per-node
  ``table`` computed by the previous stage, and the rows' ``nbr``/``sim``/``edge_attr``.

The runtime runs each stage over all rows in chunks, keeps its per-node output (``[N, hidden]``, 10x
smaller than per-edge tensors) as the next stage's table, and the last stage returns link and density.
Per-node projections are thus computed once and gathered per edge. Each stage calls the same
``LanderNet`` methods its whole-graph forward is made of, so the composition equals
``LanderNet.forward`` exactly (the parity tests check it through onnxruntime).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from qdrant_lander.training.model import LanderNet, neighbour_weights

StageKind = Literal["node", "edge"]


class Stage(nn.Module):
    """A slice of the model; ``kind`` says which inputs it reads (see module docstring)."""

    kind: StageKind
    name: str


class Encode(Stage):
    kind, name = "node", "encode"

    def __init__(self, net: LanderNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)


class Conv(Stage):
    kind = "edge"

    def __init__(self, net: LanderNet, index: int) -> None:
        super().__init__()
        self.name = f"conv{index}"
        self.conv = net.convs[index]

    def forward(self, h: torch.Tensor, table: torch.Tensor, nbr: torch.Tensor, sim: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        return self.conv(h, table, nbr, neighbour_weights(sim))


class Project(Stage):
    kind, name = "node", "project"

    def __init__(self, net: LanderNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net.project(h)


class Head(Stage):
    kind, name = "edge", "head"

    def __init__(self, net: LanderNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor, table: torch.Tensor, nbr: torch.Tensor, sim: torch.Tensor,
                edge_attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        link = torch.sigmoid(self.net.edge_logits(z, table, nbr, edge_attr))
        return link, LanderNet.density_from_links(link, sim)


def stages(net: LanderNet) -> list[Stage]:
    """The stages whose composition is ``net.forward``."""
    return [Encode(net), *(Conv(net, i) for i in range(len(net.convs))), Project(net), Head(net)]


def run_stages(parts: list[Stage], x: torch.Tensor, nbr: torch.Tensor, sim: torch.Tensor, edge_attr: torch.Tensor,
               chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The staged forward in torch, ``chunk_rows`` rows at a time (the benchmark's bounded-memory torch)."""
    table = x
    for part in parts:
        outs = []
        for a in range(0, x.shape[0], chunk_rows):
            rows = slice(a, a + chunk_rows)
            outs.append(part(table[rows]) if part.kind == "node"
                        else part(table[rows], table, nbr[rows], sim[rows], edge_attr[rows]))
        table = torch.cat(outs) if isinstance(outs[0], torch.Tensor) else tuple(map(torch.cat, zip(*outs)))
    return table
