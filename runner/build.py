"""RunSpec -> Workload: the network on its device, and the host inputs requests are made of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from torch import nn

from runner.errors import ConfigError
from runner.spec import InputSpec, RunSpec


@dataclass
class Workload:
    model: nn.Module  # on the run's device and dtype, in eval mode
    sources: list[torch.Tensor]  # request inputs the timed passes rotate through (pinned if asked)
    baseline_sources: list[torch.Tensor]  # the same values in pageable memory
    in_dtype: torch.dtype
    out_shape: tuple[int, ...]  # one request's output
    out_dtype: torch.dtype


def make_inputs(inp: InputSpec, dtype: torch.dtype, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` distinct requests on the host: (count, batch, *shape). Never zeros."""
    size = (count, *inp.request_shape)
    if inp.kind == "tokens":
        return torch.randint(0, inp.vocab, size, generator=generator, dtype=torch.int64)
    return torch.randn(size, generator=generator, dtype=torch.float32).to(dtype)


def input_dtype(spec: RunSpec) -> torch.dtype:
    return torch.int64 if spec.input.kind == "tokens" else spec.torch_dtype


def instantiate_model(spec: RunSpec) -> nn.Module:
    """Build the module named by model.module; every failure becomes a one-line ConfigError."""
    target = str(spec.module["_target_"])
    try:
        get_object(target)
    except Exception as exc:
        reason = str(exc.__cause__ or exc).splitlines()[0]
        raise ConfigError(
            f"model.module._target_={target}: cannot be imported ({reason}); "
            "name an importable class or function, e.g. torch.nn.Linear or runner.models.mlp.MLP"
        ) from exc
    try:
        module = instantiate(dict(spec.module))
    except InstantiationException as exc:
        cause = exc.__cause__
        reason = str(cause or exc).splitlines()[0] if str(cause or exc) else type(cause).__name__
        if isinstance(cause, TypeError):
            raise ConfigError(
                f"model.module: the arguments do not fit {target} ({reason}); "
                "fix the keys under model.module"
            ) from exc
        raise ConfigError(f"model.module: building {target} failed ({reason})") from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"model.module._target_={target}: builds a {type(module).__name__}, not an "
            "nn.Module; name an nn.Module class or a function that returns one"
        )
    return module


def _probe(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = model(x)
        if x.is_cuda:  # kernels fail asynchronously (an index out of range): surface it here
            torch.cuda.synchronize(x.device)
    if not isinstance(y, torch.Tensor):
        raise ConfigError(
            f"model {type(model).__name__} returns a {type(y).__name__}; the runner needs a "
            "module whose forward returns one tensor (wrap it to select the output)"
        )
    return y


def check_forward(spec: RunSpec, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One eager forward before anything else: tells a bad shape from an unsupported dtype."""
    try:
        return _probe(model, x)
    except ConfigError:
        raise
    except Exception as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if spec.dtype != "fp32" and spec.input.kind == "float":
            try:  # does it run in fp32? then the dtype, not the shape, is the problem
                _probe(model.float(), x.float())
                raise ConfigError(
                    f"dtype={spec.dtype}: model {spec.model_name} cannot run in {spec.dtype} on "
                    f"{spec.device} ({reason}); use dtype=fp32"
                ) from exc
            except ConfigError:
                raise
            except Exception:
                pass
            finally:
                model.to(spec.torch_dtype)
        if spec.input.kind == "tokens":
            raise ConfigError(
                f"model.input (batch {spec.input.batch}, shape {list(spec.input.shape)}, vocab {spec.input.vocab}) "
                f"does not fit model {spec.model_name} ({reason}); token ids must stay below the model's "
                "vocabulary and sequences within its length: fix model.input"
            ) from exc
        raise ConfigError(
            f"model.input.shape={list(spec.input.shape)} with batch {spec.input.batch} does not fit "
            f"model {spec.model_name} ({reason}); fix model.input to what the model takes"
        ) from exc


def request_bytes(spec: RunSpec) -> int:
    element = torch.tensor([], dtype=input_dtype(spec)).element_size()
    count = 1
    for d in spec.input.request_shape:
        count *= d
    return count * element


def available_host_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_host_memory(spec: RunSpec, available: Optional[int] = None) -> None:
    """Refuse, before allocating, a request size whose host buffers cannot fit: a host that
    runs out of memory kills the process instead of raising."""
    available = available_host_bytes() if available is None else available
    if available is None:
        return
    # Input pool twice (pageable and pinned copies), staging slots per stream, a check chunk.
    needed = request_bytes(spec) * (2 * spec.measure.input_pool + 2 * spec.streams * spec.slots + 64)
    if needed > 0.8 * available:
        raise ConfigError(
            f"model.input.batch={spec.input.batch}: one request is {request_bytes(spec) / 2**20:,.1f} MiB and the "
            f"host buffers need {needed / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB available; "
            "use a smaller batch or a smaller measure.input_pool"
        )


def build(spec: RunSpec) -> Workload:
    check_host_memory(spec)
    torch.manual_seed(spec.seed)
    model = instantiate_model(spec)
    device = torch.device(spec.device)
    model = model.to(device=device, dtype=spec.torch_dtype).eval()

    generator = torch.Generator().manual_seed(spec.seed)
    pool = make_inputs(spec.input, spec.torch_dtype, spec.measure.input_pool, generator)
    y = check_forward(spec, model, pool[0].to(device))

    sources = pool.pin_memory() if spec.pinned else pool
    return Workload(
        model=model,
        sources=list(sources.unbind(0)),
        baseline_sources=list(pool.unbind(0)),
        in_dtype=pool.dtype,
        out_shape=tuple(y.shape),
        out_dtype=y.dtype,
    )
