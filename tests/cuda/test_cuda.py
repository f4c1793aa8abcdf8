"""What needs a GPU: the same numbers on CUDA as on the CPU (flows, bf16, MTCNN). Marked ``cuda``: skipped on a
machine without one (the conftest says so), run by ``bench/gpu_check.sh`` on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from flowmodels import build_model
from pipelines.faces import FaceAligner
from pipelines.faces.photos import faces_in_photo
from pipelines.params import FaceParams

pytestmark = pytest.mark.cuda


def _model(variant: str, device: str):
    torch.manual_seed(0)
    model = build_model(variant, (1, 16, 16), 7, levels=2, steps=2, hidden=32)
    x = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 7
    model.initialize(x, y)
    return model.to(device), x.to(device), y.to(device)


@pytest.mark.parametrize("variant", ["glow", "bplf_3x3"])
def test_flow_bits_per_dim_and_gradients_match_the_cpu(variant):
    cpu, x, y = _model(variant, "cpu")
    gpu, xg, yg = _model(variant, "cuda")
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    a = cpu.bits_per_dim(x, y, noise=noise)
    b = gpu.bits_per_dim(xg, yg, noise=noise.cuda())
    assert torch.allclose(a, b.cpu(), atol=1e-4)
    a.mean().backward()
    b.mean().backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad.cpu(), atol=1e-3, rtol=1e-3), name


def test_bf16_on_cuda_keeps_the_density_in_float32():
    gpu, x, y = _model("bplf_3x3", "cuda")
    noise = torch.rand(x.shape, device="cuda")
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        bpd = gpu.bits_per_dim(x, y, noise=noise)
    full = gpu.bits_per_dim(x, y, noise=noise)
    assert bpd.dtype == torch.float32 and torch.allclose(bpd, full, rtol=2e-2)


def test_mtcnn_on_cuda_finds_the_cpu_faces(datasets_dir):
    photo = Image.open(datasets_dir / "faces" / "obama.jpg")
    found = {}
    for device in ("cpu", "cuda"):
        aligner = FaceAligner(FaceParams(device=device, fallback=None), (48, 48))
        found[device] = faces_in_photo(aligner, photo)
    assert len(found["cuda"]) == len(found["cpu"]) >= 1
    for a, b in zip(found["cpu"], found["cuda"]):
        assert max(abs(p - q) for p, q in zip(a.box, b.box)) <= 3
        assert abs(a.face.astype(int) - b.face.astype(int)).mean() < 4
