"""Shard-level pipeline pieces: job spec, storage, planning, decoding, the Ray worker, manifests."""
