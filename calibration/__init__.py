"""Calibration data and the PyTorch side of graphopt: image folders, ONNX->PyTorch, recoverability, recovery."""
