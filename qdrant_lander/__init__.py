"""qdrant-lander: learned hierarchical clustering (LANDER / Hi-LANDER) for Qdrant collections."""

__version__ = "0.1.0"
