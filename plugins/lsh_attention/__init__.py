"""LSH-sparse + low-rank attention (Scatterbrain) as one op: ``ScatterbrainAttention``."""
