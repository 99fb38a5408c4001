"""Datasets, their check and ground-truth pictures, transforms, samplers and the batch collator."""
