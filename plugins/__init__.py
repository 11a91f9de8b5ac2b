"""vitrt's plugin ops. Each op lives in one folder: spec, PyTorch reference, ONNX lowerings,
CUDA kernels and TensorRT plugin, and everything else imports it from there."""
