"""What a CUDA plan's own buffers need from the streams and graphs its steps run on.

A plan owns device memory the caller never sees: the engine's workspace, the step counts and
the staged copies of params that are not dense. They are allocated (and the workspace's
first-step flags uploaded) on the stream current when the plan is built, but each step runs on
torch's current stream of that moment. Two things follow:

* a step on another stream must wait for the build's work (zeroing, upload), and the caching
  allocator must know the buffers are used there (``record_stream``), or a block freed with the
  plan could be handed out on the build stream while that stream's step still runs;
* a step captured in a CUDA graph writes those buffers (and the states, params and grads) at
  every replay: when the optimizer drops a captured plan (a structural change, or
  ``load_state_dict``), the plan's tensors are kept alive for the rest of the optimizer's life,
  so a replay of the old graph never writes freed memory. It still steps the old plan's tensors,
  hence the warning: capture the step again after such a change.

Everything here works on torch's stream and tensor objects only through the few calls named
above, so the rules are tested without a GPU with stand-ins.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch


class DeviceUse:
    """The streams a plan's buffers have been used on, and the tensors a captured graph needs.

    ``build_stream`` is the stream the plan was built on (its ``cuda_stream`` handle);
    ``ready`` an event recorded there after the build's work was queued; ``buffers`` the plan's
    own device tensors. ``capturing`` is torch's ``is_current_stream_capturing`` (a stand-in in
    tests); ``ready`` is None for a plan built during a capture (nothing to wait for there).
    """

    def __init__(
        self,
        build_stream: int,
        ready: Any,
        buffers: Iterable[torch.Tensor],
        capturing: Callable[[], bool] | None = None,
    ) -> None:
        self.build_stream = build_stream
        self.ready = ready
        self.buffers = [b for b in buffers if b is not None]
        self.streams: set[int] = {build_stream}  # streams the buffers are known to be used on
        self.captured: list[Any] | None = None  # what a captured step needs, once captured
        self._capturing = capturing or torch.cuda.is_current_stream_capturing

    def before_run(self, stream: Any, referenced: Callable[[], list[Any]]) -> None:
        """Called before each launch with the stream it goes to (a ``torch.cuda.Stream``) and
        a function listing what holds every tensor the launches address (the plan, the grads)."""
        if self._capturing():
            # torch.cuda.graph synchronised the device before the capture began, and a graph's
            # lifetime is not the allocator's to track: keep what it addresses instead
            if self.captured is None:
                self.captured = list(referenced())
            return
        handle = stream.cuda_stream
        if handle not in self.streams:
            # the first step on this stream: after the build's work, and the allocator told
            if self.ready is not None:
                stream.wait_event(self.ready)
            for b in self.buffers:
                b.record_stream(stream)
            self.streams.add(handle)

    def retire(self, keep: list[list[Any]], owner: str) -> None:
        """The plan is being dropped: a captured one leaves its tensors in ``keep`` (owned by
        the optimizer) and a warning that its graph steps stale tensors."""
        if self.captured is None:
            return
        keep.append(self.captured)
        warnings.warn(
            f"{owner}: a step of this optimizer was captured in a CUDA graph, and its launch "
            "table is now rebuilt (params, groups or states changed, or load_state_dict). The "
            "graph's tensors are kept alive, so replaying it writes no freed memory, but it "
            "updates the old tensors: capture the step again.",
            RuntimeWarning,
            stacklevel=3,
        )
