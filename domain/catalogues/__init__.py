"""Catalogues from the source documents, one module each.

Every clinical vocabulary the product uses lives here as an enum, so a new strategy,
model, modality, problem area or instrument is added in exactly one place.
"""
