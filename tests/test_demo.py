"""The README's main command, end to end on the embedded Qdrant Edge store with the shipped model."""

import json

from click.testing import CliRunner

from qdrant_lander.cli import main


def test_demo_clusters_the_sample_and_searches_inside_one_cluster(tmp_path):
    args = ["demo", "--path", str(tmp_path / "store"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["points"] == 2000 and report["scores"]["n_classes"] == 20
    assert 10 <= report["sync"]["clusters"] <= 60  # within 0.5x-3x of the 20 true intents: no collapse
    assert report["scores"]["fp"] > 0.5
    assert report["hits"] and all(h["cluster"] == report["cluster"] for h in report["hits"])
    assert report["hits"][0]["id"] == report["cluster"]  # the peak itself is its own nearest hit

    again = CliRunner().invoke(main, args[:-1])  # re-running replaces the same points: same result
    assert again.exit_code == 0, again.output
    assert f"Fp {report['scores']['fp']:.3f}" in again.stdout
    assert f"status lander_demo --path {tmp_path / 'store'};" in again.stdout  # the next steps find the store
