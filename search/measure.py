"""The one way `nas` measures latency, on the CPU and on CUDA.

Every latency figure in the project (kernel table, whole-model fits, held-out checks,
`nas latency --measure`, the winner of a search) comes from `Measurer`, so that they all
follow the same protocol (see shared/notes/latency-measurement.md):

* CPU: the thread count is set explicitly and recorded; the callable runs under
  `torch.inference_mode`; it warms up for at least `warmup_iters` calls and `warmup_s`
  seconds; the figure is the median of at least `runs` timed samples, with IQR/median
  kept; a measurement whose IQR/median exceeds `max_rel_iqr` is taken again. Each attempt
  is watched by `MachineProbe`: one made while other processes used the CPU, or while
  the machine ran slower than its calm speed, is waited out and taken again, and
  flagged `contended` if the machine never calms down.
* CUDA: samples are timed with CUDA events on the current stream, each sample
  synchronised before the next so that launch gaps count (they are part of a batch-1
  forward pass). Eager mode times the Python forward; graph mode captures it once in a
  CUDA graph and times replays. Inputs live on the device before timing starts.

Latency is one forward pass, in ms, for a fixed (batch, seq_len) workload.

The protocol is `timing.time_callable` and the machine watch is `probe.MachineProbe`;
this module holds `Measurer` (threads, device, inputs and models around them) and
re-exports the protocol's names, which callers import from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas.search_space import Arch, SearchSpace
from nas.supernet import NetConstants, StaticModel
from nas.supernet.static import FORMAT as STATIC_FORMAT

from .fingerprint import Workload
from .probe import Disturbance, MachineProbe, Probe, WaitBudget
from .timing import (
    CPU_RUNS,
    CUDA_RUNS,
    Clock,
    MeasureConfig,
    Measurement,
    fastest_calm,
    less_disturbed,
    retry_disturbed,
    time_callable,
    torch_threads,
)


def random_model(space: SearchSpace, arch: Arch, seed: int = 0) -> StaticModel:
    """The extracted model of `arch`, with seeded random weights instead of trained ones.

    Latency does not depend on the weight values, but all-zero weights could take fast
    paths that trained weights never do, so the weights are drawn at the supernet's
    initial scale (N(0, 0.02)) from a seeded generator.
    """
    config = {
        "format": STATIC_FORMAT,
        "constants": NetConstants.from_space(space).to_dict(),
        "arch": arch.to_dict(),
    }
    model = StaticModel.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02, generator=gen)
    return model.eval()


class Measurer:
    """Measures callables and models for one `Workload`, by the protocol above.

    It owns the workload's fixed input (a (batch, seq_len) int64 token tensor on the
    device) so that every measurement sees the same shapes.
    """

    def __init__(
        self,
        workload: Workload,
        config: MeasureConfig | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        probe: Probe | None = None,
        waits: WaitBudget | None = None,
    ):
        workload.check_available()
        self.workload = workload
        self.config = config or MeasureConfig()
        self.clock = clock
        # The probe is on unless a fake clock is in use (a fake clock's attempts take no
        # wall time, so the machine's state over them means nothing). On CUDA only the
        # host's load is watched: the reference op would time the CPU, not the GPU.
        if probe is None and clock is None:
            probe = MachineProbe(check_speed=workload.device == "cpu")
        self.probe = probe
        self.waits = waits or WaitBudget()
        self.device = torch.device(workload.device)
        gen = torch.Generator().manual_seed(seed)
        # Created once, on the device, outside every timed region.
        self.tokens = torch.randint(0, 256, (workload.batch, workload.seq_len), generator=gen).to(
            self.device
        )  # (B, T) int64

    def tokens_for(self, vocab_size: int) -> torch.Tensor:
        """The fixed (B, T) token input, folded into `vocab_size`."""
        return self.tokens % vocab_size

    def hidden(self, d_model: int, seed: int = 0) -> torch.Tensor:
        """A fixed (B, T, d_model) activation, as the blocks of a model receive it."""
        gen = torch.Generator().manual_seed(seed)
        shape = (self.workload.batch, self.workload.seq_len, d_model)
        x = torch.randn(shape, generator=gen) * 0.02
        return x.to(self.device, self.workload.torch_dtype)

    def prepare(self, module: nn.Module) -> nn.Module:
        """`module` in eval mode, on the device, in the workload's dtype."""
        return module.eval().to(self.device, self.workload.torch_dtype)

    def measure(self, fn: Callable[[], Any], config: MeasureConfig | None = None) -> Measurement:
        """Measure `fn()` (one forward pass) under the workload's threads, device and mode."""
        config = config or self.config
        with torch_threads(self.workload.threads), torch.inference_mode():
            if self.workload.mode == "graph":
                fn = _capture_graph(fn)
            return time_callable(
                fn, config, self.workload.device, self.clock, self.probe, self.waits
            )

    def measure_model(self, model: nn.Module, config: MeasureConfig | None = None) -> Measurement:
        """One forward pass of `model(tokens)` on the workload's fixed tokens."""
        model = self.prepare(model)
        vocab = getattr(getattr(model, "consts", None), "vocab_size", 256)
        tokens = self.tokens_for(vocab)
        return self.measure(lambda: model(tokens), config)

    def measure_arch(
        self, space: SearchSpace, arch: Arch, config: MeasureConfig | None = None, seed: int = 0
    ) -> Measurement:
        """The extracted model of `arch` (seeded random weights), one forward pass."""
        return self.measure_model(random_model(space, arch, seed), config)


def _capture_graph(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Capture `fn` in a CUDA graph and return its replay.

    The warm-up runs on a side stream first, as CUDA-graph capture requires; the inputs
    `fn` closes over are static tensors already on the device, so replays re-read them.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay


__all__ = [
    "CPU_RUNS",
    "CUDA_RUNS",
    "Clock",
    "Disturbance",
    "MachineProbe",
    "MeasureConfig",
    "Measurement",
    "Measurer",
    "Probe",
    "WaitBudget",
    "fastest_calm",
    "less_disturbed",
    "random_model",
    "retry_disturbed",
    "time_callable",
    "torch_threads",
]
