"""ONNX <-> PyTorch: onnx2torch with graphopt's converters, the student and the teacher."""
