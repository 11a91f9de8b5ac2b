"""Token fusion (MCTF, ToMe) as one op: ``TokenFusion`` in namespace ``vitrt``."""
