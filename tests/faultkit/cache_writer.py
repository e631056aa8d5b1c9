"""One of two processes filling one embedding cache at once (``test_reliability.py``).

``python cache_writer.py MODEL CACHE START STOP`` loads the ``transformers`` teacher MODEL, prints
``ready`` once it is warm, waits for a line on stdin (the go signal, so that both writers start
together), then embeds texts ``START..STOP`` into CACHE in many small transactions and prints
``ok``.
"""

from __future__ import annotations

import sys

from cellcube.config import TeacherConfig
from cellcube.embed.cache import EmbeddingCache, embed_texts
from cellcube.embed.teachers import load_teacher


def main(model: str, cache_path: str, start: int, stop: int) -> None:
    texts = [f"text {i} about cats and dogs" for i in range(start, stop)]
    teacher = load_teacher(TeacherConfig(model=model, kind="transformers", batch_size=8))
    teacher.encode(["warm up"])
    print("ready", flush=True)
    sys.stdin.readline()
    with EmbeddingCache(cache_path) as cache:
        for i in range(0, len(texts), 10):  # many small transactions, interleaved with the other
            embed_texts(teacher, texts[i : i + 10], cache)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
