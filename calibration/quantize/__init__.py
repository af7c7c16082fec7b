"""INT8 on onnxruntime: static quantization and INT8 recovery."""
