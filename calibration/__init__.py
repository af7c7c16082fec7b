"""Calibration data and the PyTorch side of graphopt, one sub-package per concern: data (image folders, preprocessing,
the calibration set), bridge (ONNX <-> PyTorch), recovery (training), scoring (what cuts cost, channel orders,
fitted bases) and quantize (onnxruntime INT8, INT8 recovery)."""
