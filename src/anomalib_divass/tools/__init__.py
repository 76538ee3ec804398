"""Tools around the model: demo data and the demo run (each its own module)."""
