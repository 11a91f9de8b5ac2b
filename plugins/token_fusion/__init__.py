"""Token fusion (MCTF, ToMe) as one op: ``TokenFusion`` in namespace ``vitrt``.

- ``spec``: name, version, namespace, attributes, the op boundary and the output-shape rule;
- ``reference``: the PyTorch reference (export-friendly; ground truth for every lowering);
- ``config``: presets ("mctf", "mctf-fast", "tome"), the dict / dataclass form, validation;
- ``module``: ``FusionBlock`` (a block that fuses, same weights) and ``TokenFusionOp``;
- ``integration``: ``apply_fusion(model, fusion)``, registered as ``create_model``'s ``fusion`` option.
"""
