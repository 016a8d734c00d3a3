"""Weight-free video metrics: fidelity against a reference and attributes measured from frames."""
