"""HTTP resources: one module per URL shape, each a thin translation to a Feed call."""
