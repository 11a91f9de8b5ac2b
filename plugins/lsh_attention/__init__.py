"""LSH-sparse + low-rank attention (Scatterbrain) as one op: ``ScatterbrainAttention``.

- ``spec``: plugin name / version / namespace, attributes, inputs, shape rule, dtypes (read by every
  lowering, kernel and plugin);
- ``reference``: the PyTorch ground truth (``scatterbrain_attention``, ``lsh_attention``,
  ``performer_attention``), export-friendly;
- ``module``: attention cores owning the fixed random tensors as buffers;
- ``integration``: ``create_model(..., attention=...)`` presets and configs;
- ``memory``: allocation tracking used by the memory test and benchmark.
"""
