"""Profile stores: one interface, one module per backend."""
