"""Deployment: runners (TensorRT, ONNX Runtime) behind one interface and latency profiling."""
