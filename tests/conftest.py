"""Shared fixtures: the dev data lives in ../shared/data and is read in place."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so tests can import ``benchmarks.tasks``
