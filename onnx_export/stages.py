"""LanderNet cut into stages that can each run on a slice of rows, for bounded-memory serving.

One forward over a 1M-node graph materialises several ``[N*k, hidden]`` edge tensors (gigabytes).
Chunking rows of the whole model is wrong for a GNN: a row's output needs its neighbours' hidden
states, which need *their* neighbours. So the model is cut where it gathers:

* a **node** stage maps a node's own features to new ones (no neighbours involved);
* an **edge** stage computes rows ``R`` from their own features (``self``), a full per-node
  ``table`` computed by the previous stage, and the rows' ``nbr``/``sim``/``edge_attr``.

The runtime runs each stage over all rows in chunks, keeps its per-node output (``[N, hidden]``, 10x
smaller than per-edge tensors) as the next stage's table, and the last stage returns link and density.
Per-node projections are thus computed once and gathered per edge. Composition equals
``LanderNet.forward`` exactly (the parity tests check it through onnxruntime).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from qdrant_lander.training.model import LanderNet, gather_rows

StageKind = Literal["node", "edge"]


class Stage(nn.Module):
    """A slice of the model; ``kind`` says which inputs it reads (see module docstring)."""

    kind: StageKind
    name: str


class Encode(Stage):
    kind, name = "node", "encode"

    def __init__(self, net: LanderNet) -> None:
        super().__init__()
        self.encoder = net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encoder(x))


class Conv(Stage):
    kind = "edge"

    def __init__(self, net: LanderNet, index: int) -> None:
        super().__init__()
        self.name = f"conv{index}"
        self.lin = net.convs[index].lin

    def forward(self, h: torch.Tensor, table: torch.Tensor, nbr: torch.Tensor, sim: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        weight = torch.relu(sim)
        weight = weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-6)
        agg = (weight.unsqueeze(-1) * gather_rows(table, nbr)).sum(dim=1)
        return torch.relu(self.lin(torch.cat([h, agg], dim=-1)))


class Project(Stage):
    """Per-node projections the link head compares: unit ``proj(h)`` (relative head) or
    ``src_proj(h) || dst_proj(h)`` (paper head)."""

    kind, name = "node", "project"

    def __init__(self, net: LanderNet) -> None:
        super().__init__()
        self.head = net.config.head
        if self.head == "relative":
            self.proj = net.proj
        else:
            self.src_proj, self.dst_proj = net.src_proj, net.dst_proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.head == "relative":
            z = self.proj(h)
            return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return torch.cat([self.src_proj(h), self.dst_proj(h)], dim=-1)


class Head(Stage):
    kind, name = "edge", "head"

    def __init__(self, net: LanderNet) -> None:
        super().__init__()
        self.head = net.config.head
        self.edge_mlp = net.edge_mlp

    def forward(self, z: torch.Tensor, table: torch.Tensor, nbr: torch.Tensor, sim: torch.Tensor,
                edge_attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zj = gather_rows(table, nbr)
        if self.head == "relative":
            zi = z.unsqueeze(1).expand(-1, nbr.shape[1], -1)
            feats = torch.cat([zi * zj, (zi - zj).abs(), edge_attr], dim=-1)
        else:
            half = z.shape[-1] // 2
            feats = torch.relu(zj[..., :half] + z[:, half:].unsqueeze(1))
        link = torch.sigmoid(self.edge_mlp(feats).squeeze(-1))
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
