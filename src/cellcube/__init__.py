"""cellcube: a 3D neural cellular automaton that transforms text embeddings.

Pipeline: text -> teacher encoder -> embedding -> reshaper -> cube (cells x steps) -> reshaper
-> embedding -> phrase-bank decoder -> text. See the README for the CLI and configuration.
"""

__version__ = "0.1.0"
