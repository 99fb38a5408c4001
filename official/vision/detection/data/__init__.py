"""Datasets, transforms, samplers and the batch collator."""
