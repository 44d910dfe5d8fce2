"""LANDER in torch: one GNN over a fixed-degree kNN graph with a link head and a density head.

The graph is the ``[N, k]`` neighbour layout of :class:`~qdrant_lander.knn.KnnGraph`, so message
passing is a gather (``index_select``), a reshape and a sum over ``k``: no scatter ops, which export
to ONNX exactly and run the same in onnxruntime. The density is *derived* from the link
probabilities (density_i = mean_m sim_im * (2 p_im - 1), shared/design/METHOD.md), so links and density come from
one model and cannot disagree.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..features import NodeMode

Head = Literal["relative", "paper"]


class NetConfig(BaseModel):
    """Everything needed to rebuild a :class:`LanderNet` from a saved state dict."""

    model_config = ConfigDict(frozen=True)

    node_mode: NodeMode
    node_dim: int = Field(gt=0, description="Width of the node input x")
    edge_dim: int = Field(gt=0, description="Number of edge features per (i, m) edge")
    hidden: int = Field(64, gt=0)
    layers: int = Field(1, ge=0, description="GraphConv-style message-passing layers")
    head: Head = "relative"
    head_hidden: int = Field(64, gt=0)


def _mlp(sizes: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1])  # no activation after the last layer


def gather_rows(h: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """``h[nbr]`` for a fixed-degree ``nbr [N, k]`` as one Gather: ``[N, k, H]``."""
    n, k = nbr.shape
    return h.index_select(0, nbr.reshape(-1)).reshape(n, k, h.shape[-1])


def neighbour_weights(sim: torch.Tensor) -> torch.Tensor:
    """Aggregation weights a_im: the non-negative similarity, normalised over each row."""
    weight = torch.relu(sim)
    return weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-6)


class GraphConv(nn.Module):
    """h_i' = ReLU(W [h_i || sum_m a_im h_nbr(i,m)]) with a_im the row-normalised similarity.

    ``h`` holds the states of the rows being updated and ``table`` those of every node (the same
    tensor in a whole-graph forward; a slice and the full table when serving in row chunks).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(2 * dim, dim)

    def forward(self, h: torch.Tensor, table: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        agg = (weight.unsqueeze(-1) * gather_rows(table, nbr)).sum(dim=1)
        return torch.relu(self.lin(torch.cat([h, agg], dim=-1)))


class LanderNet(nn.Module):
    """Link probability for every kNN edge and density for every node.

    ``head="relative"`` decides links from the edge structure plus *relative* node terms (products
    and absolute differences of L2-normalised projections of both endpoints), never from absolute
    coordinates: a head reading coordinates memorises the training classes' regions and fails on
    unseen ones (shared/design/METHOD.md). ``head="paper"`` is the paper's MLP(src_proj(h_j) + dst_proj(h_i)), kept
    for comparison.
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = _mlp([c.node_dim, c.hidden, c.hidden])
        self.convs = nn.ModuleList(GraphConv(c.hidden) for _ in range(c.layers))
        if c.head == "relative":
            self.proj = nn.Linear(c.hidden, c.hidden)
            self.edge_mlp = _mlp([2 * c.hidden + c.edge_dim, c.head_hidden, c.head_hidden, 1])
        else:
            self.src_proj = nn.Linear(c.hidden, c.head_hidden)
            self.dst_proj = nn.Linear(c.hidden, c.head_hidden)
            self.edge_mlp = _mlp([c.head_hidden, c.head_hidden, 1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encoder(x))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Per-node terms the link head compares: unit ``proj(h)`` (relative head) or
        ``src_proj(h) || dst_proj(h)`` (paper head); computed once per node, gathered per edge."""
        if self.config.head == "relative":
            z = self.proj(h)
            return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return torch.cat([self.src_proj(h), self.dst_proj(h)], dim=-1)

    def edge_logits(self, z: torch.Tensor, table: torch.Tensor, nbr: torch.Tensor,
                    edge_attr: torch.Tensor) -> torch.Tensor:
        """Link scores ``[R, k]`` of rows with projections ``z``; ``table`` holds every node's."""
        zj = gather_rows(table, nbr)
        if self.config.head == "relative":
            zi = z.unsqueeze(1).expand(-1, nbr.shape[1], -1)
            feats = torch.cat([zi * zj, (zi - zj).abs(), edge_attr], dim=-1)
        else:
            half = z.shape[-1] // 2  # src_proj of the neighbour j + dst_proj of the row i
            feats = torch.relu(zj[..., :half] + z[:, half:].unsqueeze(1))
        return self.edge_mlp(feats).squeeze(-1)

    def link_logits(self, x: torch.Tensor, nbr: torch.Tensor, sim: torch.Tensor,
                    edge_attr: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid link scores ``[N, k]`` (training uses these for a stable BCE)."""
        weight = neighbour_weights(sim)
        h = self.encode(x)
        for conv in self.convs:
            h = conv(h, h, nbr, weight)
        z = self.project(h)
        return self.edge_logits(z, z, nbr, edge_attr)

    @staticmethod
    def density_from_links(link_prob: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
        """density_i = mean_m sim_im * (P(link) - P(no link))."""
        return (sim * (2 * link_prob - 1)).mean(dim=1)

    def forward(self, x: torch.Tensor, nbr: torch.Tensor, sim: torch.Tensor,
                edge_attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(link probability ``[N, k]``, density ``[N]``)."""
        link_prob = torch.sigmoid(self.link_logits(x, nbr, sim, edge_attr))
        return link_prob, self.density_from_links(link_prob, sim)
