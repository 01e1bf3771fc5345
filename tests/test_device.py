"""The mixed-precision choice, decided from what CUDA reports about the GPU, with those reports
mocked so that it runs without one: bf16 only where the GPU computes it natively (compute
capability 8.0 or newer), fp16 with loss scaling on older GPUs such as Colab's T4 (7.5), fp32
on the CPU. tests/test_cuda.py runs both precisions on a real GPU."""
import pytest
import torch

from bertbook.device import autocast_dtype, needs_grad_scaler


def fake_gpu(monkeypatch, capability, including_emulation_argument=True):
    """Make torch.cuda report a GPU of `capability` as torch does: bf16 counts as supported
    everywhere when emulation counts (torch's default), natively only from 8.0 on."""
    native = capability >= (8, 0)
    if including_emulation_argument:
        def is_bf16_supported(including_emulation: bool = True) -> bool:
            return native or including_emulation
    else:  # a torch without the argument: only the capability tells
        def is_bf16_supported() -> bool:
            return True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.mark.parametrize("including_emulation_argument", [True, False])
@pytest.mark.parametrize("capability, dtype, scaler", [
    ((7, 5), torch.float16, True),    # T4: bf16 only emulated
    ((8, 0), torch.bfloat16, False),  # A100
    ((8, 9), torch.bfloat16, False),  # L4
    ((9, 0), torch.bfloat16, False),  # H100
])
def test_bf16_only_where_the_gpu_has_it_natively(monkeypatch, capability, dtype, scaler,
                                                  including_emulation_argument):
    fake_gpu(monkeypatch, capability, including_emulation_argument)
    assert autocast_dtype("cuda") == dtype
    assert autocast_dtype(torch.device("cuda", 0)) == dtype
    assert needs_grad_scaler("cuda") is scaler


def test_no_autocast_on_the_cpu(monkeypatch):
    fake_gpu(monkeypatch, (8, 0))  # a GPU present changes nothing for a CPU device
    assert autocast_dtype("cpu") is None
    assert needs_grad_scaler("cpu") is False
