"""Reranker training: hard negatives from our own first stage, three losses, a seeded CPU/GPU trainer."""
