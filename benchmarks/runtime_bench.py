"""Nodes/s and peak memory of the torch model vs the ONNX runtime, on synthetic fixed-degree graphs.

Each (engine, size) runs in its own subprocess so its peak RSS (``VmHWM``) is its own. The
graph is random with k neighbours per node and random model inputs of the real shapes (node and
edge feature counts from ``qdrant_lander.features``): cost depends on shapes, not values. The model is LanderNet with the trainer's
default widths (hidden 64, one conv layer, relative head), exported once with :mod:`onnx_export`.

Engines:
  torch          one ``LanderNet.forward`` over the whole graph (what training-time scoring does)
  torch-chunked  the same stages the ONNX file holds, run in torch chunk by chunk
  onnx           ``qdrant_lander.runtime.OnnxScorer`` (stages, chunks of --chunk-edges edges)
  onnx-cuda      the same on the GPU (``device="cuda"``; needs onnxruntime-gpu and a GPU, so not a default)
  features       ``qdrant_lander.features.level_inputs`` on the same graph with random unit vectors
                 of --dim dimensions (what feeds the model; not part of the model's cost)

Times are the best of 3 passes up to 100k nodes, one pass above.

Run: ``.venv/bin/python benchmarks/runtime_bench.py [--sizes 10000 100000 1000000] [--threads 1]``;
on a GPU machine ``--engines onnx onnx-cuda``. Prints one table with the onnx/torch and cuda/cpu ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout
K = 10
ENGINES = ("torch", "torch-chunked", "onnx", "features")
ALL_ENGINES = (*ENGINES, "onnx-cuda")


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. Not ``ru_maxrss``: that one survives exec, so a
    child would inherit the parent's peak."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _graph(n: int, seed: int = 0):
    import numpy as np

    from qdrant_lander.features import EDGE_FEATURES, STRUCTURE_NODE_FEATURES, LevelInputs

    rng = np.random.default_rng(seed)
    nbr = rng.integers(0, n, (n, K))
    sim = np.sort(rng.random((n, K), dtype=np.float32), axis=1)[:, ::-1].copy()
    x = rng.standard_normal((n, len(STRUCTURE_NODE_FEATURES)), dtype=np.float32)
    edge_attr = rng.standard_normal((n, K, len(EDGE_FEATURES)), dtype=np.float32)
    return LevelInputs(x=x, nbr=nbr, sim=sim, edge_attr=edge_attr, peak_index=np.arange(n),
                       size=np.ones(n, dtype=np.int64))


def _child(engine: str, n: int, model: str, threads: int, chunk_edges: int, dim: int) -> dict:
    """Runs in the subprocess: build inputs, then time one pass of ``engine`` and record peak RSS."""
    import numpy as np

    inputs = _graph(n)
    if engine == "features":
        from qdrant_lander.knn import KnnGraph
        from qdrant_lander.features import level_inputs

        graph = KnnGraph(nbr=inputs.nbr, sim=inputs.sim)
        del inputs
        v = np.random.default_rng(2).standard_normal((n, dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ones = np.ones(n, dtype=np.int64)
        run = lambda: level_inputs(graph, peak=v, mean=v, size=ones, peak_index=np.arange(n),  # noqa: E731
                                   node_mode="structure")
    elif engine in ("onnx", "onnx-cuda"):
        from qdrant_lander.runtime import OnnxScorer

        device = "cuda" if engine == "onnx-cuda" else "cpu"
        scorer = OnnxScorer(model, device=device, threads=threads, chunk_edges=chunk_edges or None)
        scorer(_graph(1000, seed=1))  # warm-up
        run = lambda: scorer(inputs)  # noqa: E731
    else:
        import torch

        from onnx_export.stages import run_stages, stages
        from qdrant_lander.runtime import DEFAULT_CHUNK_EDGES
        from qdrant_lander.training.model import LanderNet, NetConfig

        torch.set_num_threads(threads)
        blob = torch.load(model + ".pt", weights_only=True)
        net = LanderNet(NetConfig(**blob["config"]))
        net.load_state_dict(blob["state"])
        net.eval()
        parts = stages(net)
        tensors = [torch.from_numpy(a) for a in (inputs.x, inputs.nbr, inputs.sim, inputs.edge_attr)]
        rows = max(1, (chunk_edges or DEFAULT_CHUNK_EDGES) // K)

        def run():
            with torch.no_grad():
                return net(*tensors) if engine == "torch" else run_stages(parts, *tensors, chunk_rows=rows)

    base = _status_mb("VmRSS")
    seconds = float("inf")
    for _ in range(3 if n <= 100_000 else 1):
        start = time.perf_counter()
        run()
        seconds = min(seconds, time.perf_counter() - start)
    return {"engine": engine, "nodes": n, "seconds": seconds, "nodes_per_s": n / seconds,
            "rss_before_mb": base, "peak_rss_mb": _status_mb("VmHWM")}


def _export(path: Path) -> None:
    import torch

    from onnx_export import export_onnx
    from qdrant_lander.features import EDGE_FEATURES, STRUCTURE_NODE_FEATURES
    from qdrant_lander.model_card import ModelCard
    from qdrant_lander.training.model import LanderNet, NetConfig

    torch.manual_seed(0)
    config = NetConfig(node_mode="structure", node_dim=len(STRUCTURE_NODE_FEATURES), edge_dim=len(EDGE_FEATURES))
    net = LanderNet(config).eval()
    torch.save({"config": config.model_dump(), "state": net.state_dict()}, str(path) + ".pt")
    export_onnx(net, ModelCard(name="bench", node_mode="structure", input_dim="any"), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ALL_ENGINES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension for the features engine")
    parser.add_argument("--chunk-edges", type=int, default=0, help="default: the runtime's default for the device")
    parser.add_argument("--torch-max-nodes", type=int, default=100_000,
                        help="skip one-shot torch above this size (it needs ~10x the memory of 100k at 1M)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, n, model, threads, chunk, dim = args.child
        print(json.dumps(_child(engine, int(n), model, int(threads), int(chunk), int(dim))))
        return

    from qdrant_lander.runtime import DEFAULT_CHUNK_EDGES, DEFAULT_CUDA_CHUNK_EDGES

    chunk = args.chunk_edges
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # the caller's own entries kept
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(args.threads)}
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "bench.onnx"
        _export(model)
        for n in args.sizes:
            for engine in args.engines:
                if engine == "torch" and n > args.torch_max_nodes:
                    print(f"skip torch (one forward) at {n} nodes (> --torch-max-nodes)", file=sys.stderr)
                    continue
                done = subprocess.run([sys.executable, __file__, "--child", engine, str(n), str(model),
                                       str(args.threads), str(chunk), str(args.dim)], env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{engine} at {n} nodes failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                results[engine, n] = r
                print(f"{engine:>13} {n:>9,} nodes: {r['seconds']:8.2f} s {r['nodes_per_s']:>12,.0f} nodes/s  "
                      f"peak RSS {r['peak_rss_mb']:8.0f} MB (inputs {r['rss_before_mb']:.0f} MB)",
                      file=sys.stderr, flush=True)
    chunks = chunk or f"the runtime's default (cpu {DEFAULT_CHUNK_EDGES}, cuda {DEFAULT_CUDA_CHUNK_EDGES})"
    print(f"\nk={K}, threads={args.threads}, chunk_edges={chunks}, dim={args.dim}, CPU: {os.cpu_count()} cores")
    print("| nodes | engine | s | nodes/s | peak RSS MB | RSS before MB | speed vs ref | peak vs ref |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for (engine, n), r in results.items():
        ratios = ["", ""]
        ref = {"onnx": results.get(("torch", n)) or results.get(("torch-chunked", n)),
               "onnx-cuda": results.get(("onnx", n))}.get(engine)
        if ref:
            ratios = [f"{r['nodes_per_s'] / ref['nodes_per_s']:.2f} (vs {ref['engine']})",
                      f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}"]
        print(f"| {n:,} | {engine} | {r['seconds']:.2f} | {r['nodes_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['rss_before_mb']:.0f} | {ratios[0]} | {ratios[1]} |")


if __name__ == "__main__":
    main()
