"""Prefect flows: prompt ingestion, anchors, render workers, nightly batches and resume.

Thin over ``pixelwizard`` (generation) and ``storage`` (objects, cache, database): tasks pass
ids and cache keys, never tensors.
"""
