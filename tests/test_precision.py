"""bf16 autocast of the cube on CPU: within tolerance of fp32, fp32 master weights and state.

Autocast runs the GEMMs in bf16 while parameters, their gradients, the optimiser state and the
residual lattice state stay fp32 (``x + dx`` promotes), so errors do not compound over steps.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from cellcube.config import CubeConfig
from cellcube.models.cube import Cube


def _cube(steps: int = 8) -> Cube:
    torch.manual_seed(0)
    cube = Cube(64, CubeConfig(lattice=(4, 4, 6), channels=8, hidden=32, steps=steps))
    with torch.no_grad():
        for p in cube.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cube


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_bf16_inference_is_within_tolerance_of_fp32():
    cube = _cube().eval()
    e = F.normalize(torch.randn(16, 64), dim=-1)
    with torch.inference_mode():
        ref = cube(e)
        with _bf16():
            low = cube(e)
    assert low.dtype == torch.float32  # e + read-out: the embedding stays fp32
    rel = (low - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert rel.max() < 2e-2
    assert rel.max() > 1e-5  # bf16 really ran: the GEMMs lost precision
    assert F.cosine_similarity(low, ref, dim=-1).min() > 0.999


def test_lattice_state_stays_fp32_under_autocast():
    cube = _cube()
    x = torch.randn(2, 4, 4, 6, 8)
    with _bf16():
        out = cube.rule(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, cube.rule(x), rtol=5e-2, atol=5e-2)


def test_bf16_training_tracks_fp32_with_fp32_master_weights():
    fp32, bf16 = _cube(), _cube()
    e = F.normalize(torch.randn(32, 64), dim=-1)
    target = F.normalize(e + 0.5 * torch.randn(32, 64), dim=-1)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (fp32, bf16)]
    start = copy.deepcopy(fp32.state_dict())
    losses: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(5):
        for name, model, opt in (("fp32", fp32, opts[0]), ("bf16", bf16, opts[1])):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                out = model(e)
            loss = 1 - F.cosine_similarity(out.float(), target, dim=-1).mean()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    for p in bf16.parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
    for state in opts[1].state.values():
        assert state["exp_avg"].dtype == torch.float32
    assert losses["fp32"][-1] < losses["fp32"][0]  # it trained
    for a, b in zip(losses["fp32"], losses["bf16"], strict=True):
        assert abs(a - b) <= 2e-2 * abs(a) + 1e-4
    moved = {k: (v - start[k]).norm() for k, v in fp32.state_dict().items()}
    for k, v in bf16.state_dict().items():  # bf16 moved the weights like fp32 did
        assert (v - fp32.state_dict()[k]).norm() <= 0.1 * moved[k] + 1e-6, k
