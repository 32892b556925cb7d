"""The clinical domain of careplan: aggregates, events, catalogues. Pure: no I/O, no clock."""
