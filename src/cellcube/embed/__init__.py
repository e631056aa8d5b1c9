"""Text -> embedding: teacher encoders, models shipped in PyPI packages, the SQLite cache."""
