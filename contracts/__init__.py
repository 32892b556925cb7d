"""Public event contracts: subject naming, JSON Schemas and the AsyncAPI document.

The schemas and ``asyncapi.json`` beside this file are generated from the event classes
in ``domain/`` by ``careplan contracts generate``; ``careplan contracts check`` (run by the
test suite) fails when they differ from what the code generates.
"""
