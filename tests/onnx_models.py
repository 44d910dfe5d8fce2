"""Small exported models shared by the ONNX test files.

An export takes 10-30 s on the CI's 2 cores, so each configuration is exported once per test session
into pytest's session temp dir and reused by every file that asks for it (the net is rebuilt from
its seed, which is cheap and gives the same weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onnx_export import export_onnx
from qdrant_lander.features import EDGE_FEATURES, STRUCTURE_NODE_FEATURES, LevelInputs
from qdrant_lander.model_card import ModelCard
from qdrant_lander.training.model import LanderNet, NetConfig

NODE_DIM, EDGE_DIM = len(STRUCTURE_NODE_FEATURES), len(EDGE_FEATURES)


def make_net(head: str = "relative", layers: int = 1, seed: int = 0) -> LanderNet:
    torch.manual_seed(seed)
    config = NetConfig(node_mode="structure", node_dim=NODE_DIM, edge_dim=EDGE_DIM, hidden=32, head_hidden=32,
                       layers=layers, head=head)
    net = LanderNet(config).eval()
    with torch.no_grad():  # default init gives near-constant outputs; spread them so errors would show
        for p in net.parameters():
            p.mul_(2.0)
    return net


def make_card(**overrides) -> ModelCard:
    values = dict(name="test-model", node_mode="structure", input_dim="any", k=10, tau=0.4, max_levels=4,
                  trained_on=["synthetic"])
    return ModelCard(**{**values, **overrides})


def exported(factory: pytest.TempPathFactory, head: str = "relative", layers: int = 1) -> tuple[LanderNet, Path]:
    """(net, path of its ONNX export), exported at most once per session."""
    net = make_net(head, layers)
    path = factory.getbasetemp() / "onnx-models" / f"{head}-{layers}.onnx"
    if not path.exists():
        export_onnx(net, make_card(), path)
    return net, path


def hub_inputs(n: int, k: int, seed: int = 0) -> LevelInputs:
    """Random level inputs where half the rows point at node 0 and a quarter at node n-1 (hubs):
    an exporter that turned a scatter-add into an overwrite would get those nodes wrong."""
    rng = np.random.default_rng(seed)
    nbr = rng.integers(0, n, (n, k))
    nbr[: n // 2, 0] = 0
    nbr[n // 4: n // 2, min(1, k - 1)] = n - 1
    sim = np.sort(rng.uniform(-0.2, 1.0, (n, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    return LevelInputs(x=rng.standard_normal((n, NODE_DIM)).astype(np.float32), nbr=nbr, sim=sim,
                       edge_attr=rng.standard_normal((n, k, EDGE_DIM)).astype(np.float32),
                       peak_index=np.arange(n), size=np.ones(n, dtype=np.int64))


def torch_scores(net: LanderNet, inputs: LevelInputs) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        link, density = net(*(torch.from_numpy(np.ascontiguousarray(a))
                              for a in (inputs.x, inputs.nbr, inputs.sim, inputs.edge_attr)))
    return link.numpy(), density.numpy()
