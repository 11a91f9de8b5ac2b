"""Deployment: runners (TensorRT, ONNX Runtime) behind one interface and latency profiling."""

if __name__.partition(".")[0] != "vitrt":  # the repository root on sys.path exposes the folder too
    raise ImportError(f"import vitrt.{__name__}, not {__name__}: vitrt's stages have one import name")
