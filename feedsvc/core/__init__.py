"""Layer 0, plain values and rules: the model, the clock, wire formats, limits, protocols,
settings and metric definitions. No I/O, and no import of any other feedsvc layer."""
