"""graphopt: make a trained network faster with a tiny calibration set, measured on the runtime that serves it."""
__version__ = "0.1.0"
