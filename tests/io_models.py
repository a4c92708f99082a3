"""Small models with the input and output structures real models have: several inputs, dicts,
dataclasses, None leaves, a leaf that is not a tensor, a batch-dependent computation."""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


class DictOut(nn.Module):
    """forward(x) -> {'scores': ..., 'extra': {'sum': ..., 'none': None}}."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> dict:
        y = self.linear(x)
        return {"scores": y, "extra": {"sum": y.sum(-1), "none": None}}


@dataclass
class Pair:
    first: torch.Tensor
    second: Optional[torch.Tensor]


class DataclassOut(nn.Module):
    """forward(x, scale) -> Pair(first, None): a dataclass with a None field."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> Pair:
        return Pair(self.linear(x) * scale, None)


class NotATensor(nn.Module):
    """forward(x) -> (tensor, 'a string'): a leaf the runner cannot copy back."""

    def forward(self, x: torch.Tensor) -> tuple:
        return x * 2, "a string"


class AffineRows(nn.Module):
    """Each row on its own: 2 * x + 1 (a padded row of zeros comes back as ones)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x + 1


class OneBased(nn.Module):
    """Embeds 1-based ids (shifted down to index): an id of 0 indexes -1, an error."""

    def __init__(self, vocab: int = 10, dim: int = 4) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if (ids < 1).any():
            raise IndexError("an id of 0: these ids start at 1")
        return self.table(ids - 1)


class Masked(nn.Module):
    """Token embeddings summed over the positions the mask keeps: padding never counts.
    forward(input_ids, attention_mask, flags) -> {'pooled': (B, D), 'per_token': (B, T, D)}."""

    def __init__(self, vocab: int = 50, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, flags: torch.Tensor) -> dict:
        h = self.embed(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32)
        h = h + flags.unsqueeze(-1).to(torch.float32)
        return {"pooled": h.sum(1), "per_token": h}


class Strict(nn.Module):
    """A model that refuses values its inputs never take, as a real one fails on them (an
    embedding on an id past its table, a mask that is not 0/1): any forward of garbage raises.
    forward(input_ids, token_type_ids, attention_mask) -> (B, T, D)."""

    def __init__(self, vocab: int = 50, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.types = nn.Embedding(2, dim)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError(f"attention_mask holds values other than 0 and 1: {attention_mask.unique().tolist()[:8]}")
        h = self.embed(input_ids)  # IndexError for an id out of range
        h = h + self.types(token_type_ids)  # and for a type past the two
        return h * attention_mask.unsqueeze(-1).to(h.dtype)


class ListArgs(nn.Module):
    """Refuses OmegaConf's containers, as strict constructors do (transformers' configs): a
    list argument must be a list, a dict a dict."""

    def __init__(self, dims: list, options: dict) -> None:
        super().__init__()
        if type(dims) is not list or type(options) is not dict:
            raise TypeError(f"dims must be a list and options a dict, not {type(dims).__name__}, "
                            f"{type(options).__name__}")
        self.linear = nn.Linear(dims[0], dims[-1], bias=options["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class EmptyAttentions(nn.Module):
    """Returns `attentions=()`, as transformers' sdpa attention does when asked for them."""

    def forward(self, x: torch.Tensor) -> dict:
        return {"last_hidden_state": 2 * x, "attentions": ()}


class ValueSized(nn.Module):
    """An output whose size follows the input's values, not its shape (a boolean index)."""

    def forward(self, x: torch.Tensor) -> dict:
        return {"y": 2 * x, "positive": x[x > 0]}


class Spectrum(nn.Module):
    """forward(x) -> the complex spectrum of a linear map of x (an FFT model's output)."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(self.linear(x), dim=-1)


class Typo(nn.Module):
    """A fault in the model's own code: self.lni for self.lin."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lni(x)


class PerSample(nn.Module):
    """Detection-style output: a list with one dict per sample, so its structure follows the
    request's batch size."""

    def forward(self, x: torch.Tensor) -> list:
        return [{"boxes": 2 * row, "score": row.sum()} for row in x]


class TwoValueSized(nn.Module):
    """Two outputs whose sizes follow the input's values (boxes kept by a threshold)."""

    def forward(self, x: torch.Tensor) -> dict:
        keep = x[:, 0] > 0
        return {"boxes": x[keep], "scores": x[keep, 0], "all": 2 * x}


class MaskedRows(nn.Module):
    """NaN where a row is masked out entirely, as attention over a fully padded sequence gives:
    eager returns the same NaN at the same places."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = 2 * x
        return torch.where(mask[:, :1].bool(), y, torch.full_like(y, float("nan")))


class PositionalOnly(nn.Module):
    """forward(self, x, /): its input cannot be given by name."""

    def forward(self, x: torch.Tensor, /) -> torch.Tensor:
        return 2 * x


class StarArgs(nn.Module):
    """forward(self, x, *extra): x can be given by name."""

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return 2 * x


class EncoderDecoder(nn.Module):
    """forward(input_ids, decoder_input_ids=None), raising as HuggingFace's T5 does when the
    decoder's ids are left out: about the argument that was given."""

    def __init__(self, vocab: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 4)

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if decoder_input_ids is None:
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        return self.embed(input_ids) + self.embed(decoder_input_ids)


class NumpyOut(nn.Module):
    """forward(x) -> a numpy array: no tensor anywhere in what it returns."""

    def forward(self, x: torch.Tensor):
        return (x * 2).numpy()


class InnerTypo(nn.Module):
    """A typo in the model's own constructor: nn.Linear(..., bais=...)."""

    def __init__(self, features: int = 8, bias: bool = True) -> None:
        super().__init__()
        self.lin = nn.Linear(features, features, bais=bias)  # type: ignore[call-arg]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class InnerMissing(nn.Module):
    """forward calls a helper of its own without an argument it needs: a fault in the code, no
    input missing."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(features, features)

    def scale(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        return x * factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.lin(x))  # type: ignore[call-arg]


class Scaled(nn.Module):
    """A Linear layer scaled by a number whose default is an int (scale=1 takes 0.5)."""

    def __init__(self, features: int = 8, scale=1) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


class OneBasedShift(OneBased):
    """OneBased without its check, so that it captures: an id of 0 indexes -1 (on a GPU, a
    device assert)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids - 1)


class Timestepped(nn.Module):
    """A denoiser's step: `x` in the model's dtype, `t` taken in fp32 only (its sinusoidal
    features need the precision), as some diffusion models keep their timestep."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.register_buffer("freqs", torch.linspace(0.1, 4.0, width))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.dtype != torch.float32:
            raise TypeError(f"t must be float32, got {t.dtype}")
        return self.linear(x + torch.sin(t[:, None] * self.freqs.float()).to(x.dtype))


class Misfit(nn.Module):
    """Two layers whose widths do not meet (16 out, 32 in): no input fits it."""

    def __init__(self, features: int = 8, hidden: int = 16, second_in: int = 32) -> None:
        super().__init__()
        self.first = nn.Linear(features, hidden)
        self.second = nn.Linear(second_in, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        return self.second(h)


class Promoting(nn.Module):
    """Needs fp32 arithmetic after its first op: an fp32 `x` times its (bf16) scale promotes the
    whole forward to fp32, so the forward runs, but not in the run's dtype."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale
        if y.dtype != torch.float32:
            raise TypeError(f"needs float32 precision, got {y.dtype}")
        return y


class SplitCall(nn.Module):
    """A call split over lines: the statement that fails reads the input on its second line."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.first = nn.Linear(features, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first(
            x
        )


class _Inner(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.lin = nn.Linear(features, features)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(h))


class Wrapper(nn.Module):
    """An inner module that calls the request's `x` by its own name, `h`."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.inner = _Inner(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Printing(nn.Module):
    """Prints a line in every forward."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("forward on", tuple(x.shape))
        return self.linear(x)


class PrintOnce(Printing):
    """Prints a notice in its first forward only, as a lazy initialisation would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "said", False):
            self.said = True
            print("initialised")
        return self.linear(x)


class StreamUser(Printing):
    """Reads the stream's own attributes in forward (its binary buffer, whether it is a tty)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sys.stdout.buffer.flush()
        sys.stdout.isatty()
        return self.linear(x)


class Kwargs(nn.Module):
    """Reads its input out of **kwargs."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(features, 4)

    def forward(self, **kw: torch.Tensor) -> torch.Tensor:
        return self.fc(kw["x"])


class SparseLocal(SplitCall):
    """Holds a sparse tensor (no storage to ask for) where its forward fails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adjacency = torch.eye(2).to_sparse()  # noqa: F841 - a local of the failing frame
        return self.first(x)


class SlowInFp32(nn.Module):
    """Refuses anything but fp32 at once, and takes half a second when it runs."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"needs float32, got {x.dtype}")
        time.sleep(0.5)
        return self.linear(x.to(self.linear.weight.dtype))


class Drawn(nn.Module):
    """Draws from Python's random stream as it is built (a constructor with a side effect), and
    places its weight where `device` says (None: the default device)."""

    def __init__(self, device: Optional[str] = None) -> None:
        super().__init__()
        self.drawn = random.random()
        self.lin = nn.Linear(4, 4, device=device)
        once = getattr(logging.getLogger(__name__), "warning_once", None)  # transformers adds it to every logger
        if once is not None:
            once("Drawn was built")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.lin(input)
