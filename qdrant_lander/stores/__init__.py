"""Where collections live: the embedded Qdrant Edge store or a Qdrant server, behind one interface."""

from .base import Collection, CollectionInfo, Hit, Neighbours, Points, Store
from .open import open_store

__all__ = ["Collection", "CollectionInfo", "Hit", "Neighbours", "Points", "Store", "open_store"]
