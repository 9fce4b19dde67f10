"""The store layer: one IPAM-level interface (`base.Store`), one module per engine."""
