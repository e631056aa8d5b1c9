"""Tests for cellcube.embed (teachers, backends, locate): both backends, dtypes, identities and
user-facing errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cellcube.config import TeacherConfig, load_config
from cellcube.embed.backends import loading_bars
from cellcube.embed.locate import resolve_model_path
from cellcube.embed.teachers import Teacher, load_teacher
from cellcube.errors import ConfigError, TeacherError

TEXTS = [
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "The weather in Zaragoza is sunny today.",
    "cats",
    "A much longer sentence that makes the batch need padding for the shorter texts around it.",
]


def _unit_rows(emb: np.ndarray, atol: float = 1e-5) -> bool:
    return bool(np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=atol))


@pytest.fixture(scope="module")
def minilm_st() -> Teacher:
    """The default teacher (sentence-transformers backend), loaded once for this module."""
    return load_teacher(TeacherConfig())


# --- default MiniLM teacher ---------------------------------------------------------------


def test_default_minilm_gives_unit_384_float32_and_ranks_paraphrases(minilm_st: Teacher) -> None:
    emb = minilm_st.encode(TEXTS)
    assert emb.shape == (len(TEXTS), 384)
    assert emb.dtype == np.float32
    assert _unit_rows(emb)
    assert minilm_st.encode_calls == 1
    similar = float(emb[0] @ emb[1])
    unrelated = float(emb[0] @ emb[2])
    assert similar > unrelated + 0.3


def test_transformers_kind_on_minilm_matches_sentence_transformers(
    minilm_st: Teacher, minilm_dir: Path
) -> None:
    hf = load_teacher(TeacherConfig(model=str(minilm_dir), kind="transformers"))
    a = minilm_st.encode(TEXTS)
    b = hf.encode(TEXTS)
    assert b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-5


def test_encode_calls_counts_batches_and_batching_does_not_change_rows(
    tiny_bert_dir: Path,
) -> None:
    teacher = load_teacher(
        TeacherConfig(model=str(tiny_bert_dir), kind="transformers", batch_size=2)
    )
    emb = teacher.encode(TEXTS)
    assert teacher.encode_calls == 3  # 5 texts in batches of 2
    one_by_one = np.concatenate([teacher.encode([t]) for t in TEXTS])
    assert teacher.encode_calls == 8
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)


def test_st_kind_counts_batches_with_progress(tiny_bert_dir: Path) -> None:
    spec = TeacherConfig(model=str(tiny_bert_dir), batch_size=2)
    small = load_teacher(spec)
    emb = small.encode(TEXTS, progress=True)
    assert small.encode_calls == 3
    whole = load_teacher(TeacherConfig(model=str(tiny_bert_dir))).encode(TEXTS)
    np.testing.assert_allclose(emb, whole, atol=1e-5)


# --- tiny random models ---------------------------------------------------------------------


def test_tiny_bert_transformers_kind(tiny_bert_dir: Path) -> None:
    spec = TeacherConfig(model=str(tiny_bert_dir), kind="transformers")
    teacher = load_teacher(spec)
    assert not teacher.loaded
    emb = teacher.encode(TEXTS)
    assert emb.shape == (len(TEXTS), 32)
    assert emb.dtype == np.float32
    assert _unit_rows(emb)
    assert not np.allclose(emb[0], emb[3])
    again = load_teacher(spec).encode(TEXTS)
    np.testing.assert_array_equal(emb, again)


def test_tiny_bert_via_sentence_transformers_kind(tiny_bert_dir: Path) -> None:
    """A plain transformers directory also loads through sentence-transformers (mean pooling)."""
    st = load_teacher(TeacherConfig(model=str(tiny_bert_dir)))
    hf = load_teacher(TeacherConfig(model=str(tiny_bert_dir), kind="transformers"))
    np.testing.assert_allclose(st.encode(TEXTS), hf.encode(TEXTS), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_returns_float32_close_to_fp32(tiny_bert_dir: Path, dtype: str) -> None:
    ref = load_teacher(TeacherConfig(model=str(tiny_bert_dir), kind="transformers")).encode(TEXTS)
    half = load_teacher(TeacherConfig(model=str(tiny_bert_dir), kind="transformers", dtype=dtype))
    emb = half.encode(TEXTS)
    assert half.backend.model.dtype == getattr(torch, dtype)
    assert emb.dtype == np.float32
    assert _unit_rows(emb)
    cos = (emb * ref).sum(axis=1)
    assert cos.min() > 0.99


def test_st_kind_fp16_returns_float32(tiny_bert_dir: Path) -> None:
    """sentence-transformers 6 returns float16 numpy for fp16 weights; we must not."""
    teacher = load_teacher(TeacherConfig(model=str(tiny_bert_dir), dtype="float16"))
    emb = teacher.encode(TEXTS)
    assert emb.dtype == np.float32
    assert _unit_rows(emb)


def test_tiny_llama_without_pad_token_fp16(tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_llama_dir).pad_token is None
    teacher = load_teacher(
        TeacherConfig(model=str(tiny_llama_dir), kind="transformers", dtype="float16")
    )
    emb = teacher.encode(TEXTS)
    assert emb.shape == (len(TEXTS), 32)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert _unit_rows(emb)
    # Padding is masked out: a short text embeds the same alone as next to longer texts.
    alone = teacher.encode([TEXTS[3]])
    assert float(alone[0] @ emb[3]) > 0.999


def test_empty_input_returns_zero_rows(tiny_bert_dir: Path) -> None:
    teacher = load_teacher(TeacherConfig(model=str(tiny_bert_dir), kind="transformers"))
    emb = teacher.encode([])
    assert emb.shape == (0, 32)
    assert emb.dtype == np.float32
    assert teacher.encode_calls == 0


def test_encode_rejects_a_bare_string(tiny_bert_dir: Path) -> None:
    teacher = load_teacher(TeacherConfig(model=str(tiny_bert_dir), kind="transformers"))
    with pytest.raises(TypeError):
        teacher.encode("hello")  # type: ignore[arg-type]


# --- identity ---------------------------------------------------------------------------------


def test_identity_without_loading_and_sensitive_to_spec(tiny_bert_dir: Path) -> None:
    base = TeacherConfig(model=str(tiny_bert_dir), kind="transformers")
    t = load_teacher(base)
    assert not t.loaded
    twin = load_teacher(TeacherConfig(model=str(tiny_bert_dir), kind="transformers"))
    assert t.identity == twin.identity
    assert t.identity.startswith(f"transformers:{tiny_bert_dir.resolve()}|mean|float32|len=256|")
    variants = [
        TeacherConfig(model=str(tiny_bert_dir), kind="transformers", dtype="float16"),
        TeacherConfig(model=str(tiny_bert_dir), kind="transformers", max_length=64),
        TeacherConfig(model=str(tiny_bert_dir), kind="sentence-transformers"),
    ]
    ids = {load_teacher(v).identity for v in variants}
    assert len(ids) == 3
    assert t.identity not in ids
    # batch size and device do not change the embeddings, so they share the cache
    same = TeacherConfig(model=str(tiny_bert_dir), kind="transformers", batch_size=3, device="auto")
    if not torch.cuda.is_available():
        assert load_teacher(same).identity == t.identity


def test_identity_equal_for_equal_specs_and_alias(minilm_dir: Path) -> None:
    a = load_teacher(TeacherConfig())
    b = load_teacher(TeacherConfig(model=str(minilm_dir)))
    assert a.identity == b.identity
    assert not a.loaded


def test_identity_changes_when_model_files_change(tiny_bert_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, copy)
    spec = TeacherConfig(model=str(copy), kind="transformers")
    before = load_teacher(spec).identity
    assert load_teacher(spec).identity == before

    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    after_config = load_teacher(spec).identity
    assert after_config != before

    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different weights
    weights.write_bytes(bytes(data))
    assert load_teacher(spec).identity != after_config


def test_identity_samples_large_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    big = tmp_path / "model.safetensors"
    big.write_bytes(bytes(3 << 20))
    spec = TeacherConfig(model=str(tmp_path), kind="transformers")
    before = load_teacher(spec).identity
    with open(big, "r+b") as fh:  # a re-saved fine-tune changes bytes everywhere, same size
        fh.seek(0)
        fh.write(b"\x01" * 1024)
    assert load_teacher(spec).identity != before


def test_hub_id_identity_is_the_id() -> None:
    teacher = load_teacher(TeacherConfig(model="some-org/some-model", kind="transformers"))
    assert teacher.identity == "transformers:some-org/some-model|mean|float32|len=256|fp=hub"


# --- resolve_model_path -------------------------------------------------------------------------


def test_resolve_model_path(
    minilm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = Path(resolve_model_path("all-MiniLM-L6-v2"))
    assert resolved == minilm_dir.resolve()
    assert (resolved / "config.json").is_file()
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("m") == str(tmp_path / "m")
    assert resolve_model_path("./m") == str(tmp_path / "m")
    assert resolve_model_path("org/name") == "org/name"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    ["/nonexistent/cellcube-model", "./no-such-model", "../no-such-model", "~/no-such-cc-model"],
)
def test_missing_path_names_teacher_model(model: str) -> None:
    with pytest.raises(TeacherError) as info:
        load_teacher(TeacherConfig(model=model))
    msg = str(info.value)
    assert msg == f"teacher.model: no such directory '{model}'"
    assert "\n" not in msg


def test_nested_missing_path(tmp_path: Path) -> None:
    model = str(tmp_path / "a" / "b")
    with pytest.raises(TeacherError, match=r"teacher\.model: no such directory"):
        load_teacher(TeacherConfig(model=model, kind="transformers"))


def test_directory_without_model_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    for kind in ("sentence-transformers", "transformers"):
        with pytest.raises(TeacherError, match=r"teacher\.model: .*not a .*model directory"):
            load_teacher(TeacherConfig(model=str(tmp_path), kind=kind))  # type: ignore[arg-type]


def test_transformers_kind_on_st_only_dir_hints_at_kind(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[]")
    with pytest.raises(TeacherError, match="sentence-transformers"):
        load_teacher(TeacherConfig(model=str(tmp_path), kind="transformers"))


def test_file_instead_of_directory(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(TeacherError, match=r"teacher\.model: .*is a file"):
        load_teacher(TeacherConfig(model=str(f)))


@pytest.mark.parametrize("kind", ["transformers", "sentence-transformers"])
def test_unreachable_hub_id_fails_on_first_encode(kind: str) -> None:
    teacher = load_teacher(TeacherConfig(model="cellcube-test/no-such-model-xyz", kind=kind))  # type: ignore[arg-type]
    with pytest.raises(TeacherError) as info:
        teacher.encode(["hello"])
    msg = str(info.value)
    assert msg.startswith("teacher.model: cannot load 'cellcube-test/no-such-model-xyz'")
    assert "hub is unreachable" in msg
    assert "\n" not in msg
    assert not teacher.loaded


def test_corrupt_local_weights_raise_teacher_error(tiny_bert_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, copy)
    (copy / "model.safetensors").write_bytes(b"garbage")
    teacher = load_teacher(TeacherConfig(model=str(copy), kind="transformers"))
    expected = rf"^teacher\.model: cannot load '{re.escape(str(copy))}'"
    with pytest.raises(TeacherError, match=expected):
        teacher.encode(["hello"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda() -> None:
    for device in ("cuda", "cuda:0"):
        with pytest.raises(
            TeacherError, match=r"^teacher\.device: CUDA requested but not available$"
        ):
            load_teacher(TeacherConfig(device=device))
    assert load_teacher(TeacherConfig(device="auto")).device == "cpu"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("teacher.kind=onnx", "teacher.kind"),
        ("teacher.dtype=float8", "teacher.dtype"),
        ("teacher.max_length=0", "teacher.max_length"),
        ("teacher.batch_size=-1", "teacher.batch_size"),
        ("teacher.layer=3", "teacher"),  # layer/pooling on a sentence-transformers teacher
    ],
)
def test_bad_teacher_settings_are_one_config_error_naming_the_key(override: str, key: str) -> None:
    """The config is the one validator: a teacher never sees an unchecked field."""
    with pytest.raises(ConfigError, match=rf"^config \(with --set\): {re.escape(key)}: ") as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "gpu-please", "invalid device 'gpu-please'"),
        ("model", "", "'' is neither an existing directory nor a valid Hugging Face hub id"),
    ],
)
def test_what_only_the_machine_can_check_names_the_field(
    field: str, value: str, message: str
) -> None:
    with pytest.raises(TeacherError, match=rf"^teacher\.{field}: {re.escape(message)}"):
        load_teacher(TeacherConfig(**{field: value}))  # type: ignore[arg-type]


def test_loading_bars_off_silences_the_gguf_reader_and_restores_it() -> None:
    """``progress=False`` must also hide the GGUF reader's bar, which ignores transformers'
    progress-bar switch; both are restored afterwards."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar, before = gguf_utils.tqdm, hf_logging.is_progress_bar_enabled()
    with loading_bars(False):
        assert gguf_utils.tqdm(range(3)).disable
        assert not hf_logging.is_progress_bar_enabled()
    assert gguf_utils.tqdm is bar
    assert hf_logging.is_progress_bar_enabled() == before
    with loading_bars(True):
        assert gguf_utils.tqdm is bar
