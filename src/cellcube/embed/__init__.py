"""Text -> embedding: the frozen teachers, the models shipped in PyPI packages, the SQLite cache.

* :mod:`~cellcube.embed.encode`: :func:`~cellcube.embed.encode.embed`, the one entry: texts
  through the teacher of a :class:`~cellcube.config.TeacherConfig` and the configured cache.
* :mod:`~cellcube.embed.splits`: a run's train/val/test splits embedded by every teacher.
* :mod:`~cellcube.embed.sharded`: the same embedding shared out over the processes of a
  ``torchrun`` job, each its blocks of the texts, the rows exchanged as tensors.
* :mod:`~cellcube.embed.teachers`: :class:`~cellcube.embed.teachers.Teacher` (lazy loading,
  batching) and :func:`~cellcube.embed.teachers.load_teacher`.
* :mod:`~cellcube.embed.backends`: sentence-transformers and ``transformers`` models, one batch.
* :mod:`~cellcube.embed.pooling`: hidden states -> one unit vector per text.
* :mod:`~cellcube.embed.locate`: where a model lives and the cache identity of a teacher.
* :mod:`~cellcube.embed.packaged`: model aliases that resolve to PyPI-packaged copies.
* :mod:`~cellcube.embed.cache`: the SQLite embedding cache.
"""
