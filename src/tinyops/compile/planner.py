"""Static memory plan: where each activation tensor lives in the one arena.

Two passes, both pure functions over plain data:

1. `buffers_of(graph)` — liveness. Activation tensors are grouped into *buffers*: a
   RESHAPE's output is the same bytes as its input (int8 row-major data does not move when
   its shape changes), so the two share one buffer and the RESHAPE costs nothing. A buffer
   is live from the operator that first writes it to the last operator that reads it
   (inclusive, operator indices in execution order). The graph's input and output are not
   in the arena: the caller passes them to `tinyops_<name>_invoke` (`in`, `out`), and the
   kernels read the input and write the output there directly. A RESHAPE from the input
   straight to the output is the one case that needs a copy (`Liveness.copies`).
   Operators with an in-place kernel (`InPlace`: 1x1 convolutions, same-size stride-1
   convolutions and depthwise convolutions, strided convolutions whose output stays
   behind their reads, ADD) whose input dies at them share that input's buffer with
   their output (`Liveness.inplace`); their scratch memory is one more buffer, live only
   during the operator. A fused pair (`Fusion`: a 1x1 convolution and the depthwise
   convolution that reads its output, run in row bands) has no buffer for the
   intermediate tensor, only a ring of a few of its rows, live during the pair; its
   output may share the pair's input buffer. A fused residual block (conv → conv → ADD
   of the block input, `Fusion.ops == 3`) is the same with two intermediates in one ring.
   A shared buffer's size may step down over its life (`Buffer.steps`): at each operator
   it needs only its largest tensor live there, so the tail an in-place operator no
   longer needs is free for later buffers.
2. `plan_memory(buffers)` — offsets, by TFLM's GreedyMemoryPlanner idea: take buffers
   largest first, and place each at the lowest offset (a multiple of the alignment) where
   it overlaps no already-placed buffer whose lifetime overlaps its own (piece by piece
   for buffers with size steps). The arena size is the highest end.

`check_plan` states the invariants and is run after planning (and by the property
tests): every buffer is placed once, aligned, inside the arena, and no two buffers whose
lifetimes overlap share a byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tinyops.compile.errors import CompileError
from tinyops.compile.ir import Graph

ALIGNMENT = 16
# Buffer ids for the caller's buffers (never in the arena).
INPUT = -1
OUTPUT = -2


@dataclass(frozen=True)
class Buffer:
    """`size` bytes needed from operator `first` to operator `last`, both inclusive.

    `steps`, when not empty, says the buffer needs fewer bytes at some operators: from
    operator `op` on (until the next step) only the first `bytes` of it are live. A merged
    in-place buffer is as large as its largest tensor only while that tensor lives (an
    input a strided convolution shrinks over frees its tail once it is consumed). `size`
    is the largest of them; the bytes are always a prefix, so the buffer keeps one offset.
    """

    id: int
    size: int
    first: int
    last: int
    steps: tuple[tuple[int, int], ...] = ()

    def lifetime_overlaps(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last

    def pieces(self) -> list[tuple[int, int, int]]:
        """(bytes, first, last) segments of constant size covering the lifetime."""
        if not self.steps:
            return [(self.size, self.first, self.last)]
        out = []
        for k, (op, n) in enumerate(self.steps):
            end = self.steps[k + 1][0] - 1 if k + 1 < len(self.steps) else self.last
            out.append((n, op, end))
        return out

    def size_at(self, op: int) -> int:
        return max((n for n, a, b in self.pieces() if a <= op <= b), default=0)


@dataclass(frozen=True)
class InPlace:
    """An operator that may write its output over one of its inputs, if that input dies.

    `operands`: the input positions it may overwrite (ADD: either); `scratch`: the bytes
    of working memory the in-place kernel needs while it runs (a pixel's outputs, the
    rows a depthwise convolution still reads), planned in the arena like any buffer."""

    operands: tuple[int, ...] = (0,)
    scratch: int = 0
    kernel: str = ""
    """The in-place function, called (params, buffer, scratch); "" when the operator's own
    function runs in place with its output pointer equal to the input (ADD, strided
    convolutions that write behind their reads)."""


@dataclass(frozen=True)
class Fusion:
    """Operators `first` .. `first + ops - 1` run as one, in row bands, inside the last:

    - ops 2: a 1x1 convolution and the depthwise convolution that is the only reader of
      its output;
    - ops 3: a residual block, convolution → convolution → ADD of the block input (the
      first's input) and the second's output; the ADD reads nothing else.

    The intermediate tensors are never whole: `ring` bytes hold the rows the next window
    needs (and, for a block, one row of the second convolution's output). `inplace`: the
    group's output may be written over the group's input (checked row by row by the
    compiler), if that input dies at the group."""

    first: int
    ring: int
    inplace: bool
    ops: int = 2

    @property
    def last(self) -> int:
        return self.first + self.ops - 1


# Buffer ids of scratch areas: SCRATCH_BASE + operator index (tensor ids are far below).
SCRATCH_BASE = 1 << 24
# Buffer ids of fused pairs' rings: RING_BASE + the index of the pair's first operator.
RING_BASE = 2 << 24


@dataclass(frozen=True)
class Liveness:
    """Activation tensor → buffer id (INPUT, OUTPUT or an arena buffer), and the buffers."""

    buffer_of: dict[int, int]
    buffers: tuple[Buffer, ...]
    # RESHAPE operator indices that must copy (input buffer → output buffer).
    copies: frozenset[int] = field(default_factory=frozenset)
    # Operators that run in place (their output shares the dying input's buffer), and
    # the scratch buffer id of those that need one.
    inplace: frozenset[int] = field(default_factory=frozenset)
    scratch: dict[int, int] = field(default_factory=dict)
    # The in-place function of each operator in `inplace` ("": its own, with out == in).
    kernels: dict[int, str] = field(default_factory=dict)
    # Fused groups: first operator index → ring buffer id; the groups run in place; and
    # each group's number of operators (2: 1x1 → depthwise, 3: conv → conv → ADD).
    fused: dict[int, int] = field(default_factory=dict)
    fused_inplace: frozenset[int] = field(default_factory=frozenset)
    fused_ops: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[Buffer, ...]
    offsets: dict[int, int]
    arena_bytes: int
    alignment: int = ALIGNMENT


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def buffers_of(
    graph: Graph,
    inplace: Mapping[int, InPlace] | None = None,
    fusions: Mapping[int, Fusion] | None = None,
) -> Liveness:
    """Group activation tensors into buffers (RESHAPE aliases, in-place operators) and
    find their lifetimes. `inplace`: the operators (by index) that have an in-place
    kernel; each runs in place when the input it may overwrite is an arena buffer that
    no later operator reads and its output is an arena buffer, too. `fusions`: fused
    pairs by first operator (`Fusion`); the caller guarantees the pair's shape rules."""
    src = graph.source
    buffer_of: dict[int, int] = {graph.inputs[0]: INPUT}
    out_tensor = graph.outputs[0]
    copies: set[int] = set()
    for op in graph.operators:
        ins = [i for i in op.inputs if i >= 0 and not graph.tensor(i).constant]
        for t in ins:
            if t not in buffer_of:
                raise CompileError(
                    f"{src}: operator {op.index} ({op.kind}) reads tensor {t} "
                    f"({graph.tensor(t).name}) before any operator writes it"
                )
        for t in op.outputs:
            if t in buffer_of:
                raise CompileError(
                    f"{src}: operator {op.index} ({op.kind}) writes tensor {t} "
                    f"({graph.tensor(t).name}), which is already written (or is the input)"
                )
            target = OUTPUT if t == out_tensor else t
            if op.kind == "RESHAPE" and ins:
                source_buffer = buffer_of[ins[0]]
                if target == OUTPUT and source_buffer != OUTPUT:
                    # The output must land in the caller's buffer. Alias the whole group
                    # into it unless the group is the caller's (read-only) input.
                    if source_buffer == INPUT:
                        copies.add(op.index)
                    else:
                        for k, v in buffer_of.items():
                            if v == source_buffer:
                                buffer_of[k] = OUTPUT
                else:
                    target = source_buffer
            buffer_of[t] = target
    if out_tensor not in buffer_of:
        raise CompileError(f"{src}: no operator writes the output tensor {out_tensor}")
    fusions = dict(fusions or {})
    fused_second = {f.last: i for i, f in fusions.items()}
    fused_inner = {i + k for i, f in fusions.items() for k in range(f.ops - 1)}
    for i, f in fusions.items():
        # The intermediate tensors are the ring: live from the group's first operator to
        # its last.
        for k in range(f.ops - 1):
            buffer_of[graph.operators[i + k].outputs[0]] = RING_BASE + i
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for op in graph.operators:
        for t in op.outputs:
            b = buffer_of[t]
            first.setdefault(b, op.index)
            last[b] = max(last.get(b, op.index), op.index)
        for t in op.inputs:
            if t >= 0 and not graph.tensor(t).constant:
                b = buffer_of[t]
                last[b] = max(last.get(b, op.index), op.index)
    # Tensor lifetimes (for the buffers' size steps): writer to last reader.
    t_first: dict[int, int] = {}
    t_last: dict[int, int] = {}
    for op in graph.operators:
        for t in op.outputs:
            t_first.setdefault(t, op.index)
            t_last[t] = max(t_last.get(t, op.index), op.index)
        for t in op.inputs:
            if t >= 0 and not graph.tensor(t).constant:
                t_last[t] = max(t_last.get(t, op.index), op.index)
    for i, f in fusions.items():
        # The group runs inside its last operator: its input is read there, too.
        x_t = graph.operators[i].inputs[0]
        x_b = buffer_of[x_t]
        last[x_b] = max(last[x_b], f.last)
        t_last[x_t] = max(t_last[x_t], f.last)
    done_inplace: set[int] = set()
    fused_inplace: set[int] = set()
    for op in graph.operators:
        if op.index in fused_inner:
            continue
        if op.index in fused_second:
            pair = fused_second[op.index]
            if not fusions[pair].inplace:
                continue
            in_b = buffer_of[graph.operators[pair].inputs[0]]
            out_b = buffer_of[op.outputs[0]]
            if (
                in_b not in (INPUT, OUTPUT)
                and out_b not in (INPUT, OUTPUT)
                and last[in_b] == op.index
                and first[out_b] == op.index
            ):
                for k, v in buffer_of.items():
                    if v == out_b:
                        buffer_of[k] = in_b
                last[in_b] = last.pop(out_b)
                del first[out_b]
                fused_inplace.add(pair)
            continue
        candidate = (inplace or {}).get(op.index)
        if candidate is None or len(op.outputs) != 1 or op.index in fusions:
            continue
        out_b = buffer_of[op.outputs[0]]
        if out_b in (INPUT, OUTPUT) or first[out_b] != op.index:
            continue
        for position in candidate.operands:
            t = op.inputs[position]
            if t < 0 or graph.tensor(t).constant:
                continue
            in_b = buffer_of[t]
            others = [
                buffer_of[u]
                for i, u in enumerate(op.inputs)
                if i != position and u >= 0 and u in buffer_of
            ]
            if in_b in (INPUT, OUTPUT) or last[in_b] != op.index or in_b in others:
                continue
            # The output's bytes are the dying input's: one buffer from the input's first
            # writer to the output's last reader.
            for k, v in buffer_of.items():
                if v == out_b:
                    buffer_of[k] = in_b
            last[in_b] = last.pop(out_b)
            del first[out_b]
            done_inplace.add(op.index)
            break
    sizes: dict[int, int] = {}
    for t, b in buffer_of.items():
        sizes[b] = max(sizes.get(b, 0), graph.tensor(t).nbytes)
    for i, fusion in fusions.items():
        sizes[RING_BASE + i] = fusion.ring
    members: dict[int, list[int]] = {}
    for t, b in buffer_of.items():
        members.setdefault(b, []).append(t)
    buffers = [
        Buffer(
            b,
            sizes[b],
            first[b],
            last[b],
            ()
            if b >= RING_BASE
            else _size_steps(
                [(graph.tensor(t).nbytes, t_first[t], t_last[t]) for t in members[b]],
                first[b],
                last[b],
            ),
        )
        for b in sorted(first)
        if b not in (INPUT, OUTPUT)
    ]
    scratch: dict[int, int] = {}
    for i in sorted(done_inplace):
        need = (inplace or {})[i].scratch
        if need > 0:
            scratch[i] = SCRATCH_BASE + i
            buffers.append(Buffer(SCRATCH_BASE + i, need, i, i))
    return Liveness(
        buffer_of,
        tuple(buffers),
        frozenset(copies),
        frozenset(done_inplace),
        scratch,
        kernels={i: (inplace or {})[i].kernel for i in done_inplace},
        fused={i: RING_BASE + i for i in fusions},
        fused_inplace=frozenset(fused_inplace),
        fused_ops={i: f.ops for i, f in fusions.items()},
    )


def _size_steps(
    tensors: list[tuple[int, int, int]], first: int, last: int
) -> tuple[tuple[int, int], ...]:
    """A buffer's bytes at each operator: the largest of its tensors live there (they all
    start at the buffer's offset). () when that is the same from first to last."""
    steps: list[tuple[int, int]] = []
    for op in range(first, last + 1):
        n = max((size for size, a, b in tensors if a <= op <= b), default=0)
        if not steps or steps[-1][1] != n:
            steps.append((op, n))
    return () if len(steps) == 1 else tuple(steps)


def plan_memory(buffers: Sequence[Buffer], alignment: int = ALIGNMENT) -> MemoryPlan:
    """Greedy by size: largest first, each at the lowest aligned offset that fits.

    A buffer with size steps is checked piece by piece: a placed buffer's freed tail may
    hold a buffer that only lives after it was freed."""
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.id))
    offsets: dict[int, int] = {}
    placed: list[tuple[int, int, int, int]] = []  # (start, end, first, last) of pieces
    for buf in order:
        # Each (own bytes, placed start, placed end) pair of pieces live at once forbids
        # the offsets in (start - own, end).
        conflicts = [
            (n, start, end)
            for n, a, b in buf.pieces()
            if n > 0
            for start, end, pa, pb in placed
            if a <= pb and pa <= b
        ]
        offset = 0
        for candidate in sorted({0, *(_align(end, alignment) for _, _, end in conflicts)}):
            if all(candidate + n <= start or candidate >= end for n, start, end in conflicts):
                offset = candidate
                break
        offsets[buf.id] = offset
        placed.extend((offset, offset + n, a, b) for n, a, b in buf.pieces() if n > 0)
    arena = max((offsets[b.id] + b.size for b in buffers), default=0)
    plan = MemoryPlan(tuple(buffers), offsets, _align(arena, alignment), alignment)
    check_plan(plan)
    return plan


def check_plan(plan: MemoryPlan) -> None:
    """Raise AssertionError naming the first broken invariant of a memory plan."""
    ids = [b.id for b in plan.buffers]
    if len(set(ids)) != len(ids) or set(ids) != set(plan.offsets):
        raise AssertionError(f"plan places buffers {sorted(plan.offsets)} for buffers {ids}")
    for b in plan.buffers:
        off = plan.offsets[b.id]
        if off % plan.alignment or off < 0 or off + b.size > plan.arena_bytes:
            raise AssertionError(
                f"buffer {b.id} at [{off}, {off + b.size}) is misaligned or outside the "
                f"{plan.arena_bytes}-byte arena"
            )
    _check_disjoint(plan.buffers, plan.offsets)


def _check_disjoint(buffers: Iterable[Buffer], offsets: dict[int, int]) -> None:
    items = list(buffers)
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if not a.lifetime_overlaps(b):
                continue
            a0, b0 = offsets[a.id], offsets[b.id]
            for an, af, al in a.pieces():
                for bn, bf, bl in b.pieces():
                    if an == 0 or bn == 0 or al < bf or bl < af:
                        continue
                    if a0 < b0 + bn and b0 < a0 + an:
                        raise AssertionError(
                            f"buffers {a.id} [{a0}, {a0 + an}) ops {af}..{al} and "
                            f"{b.id} [{b0}, {b0 + bn}) ops {bf}..{bl} overlap"
                        )


def peak_live_bytes(buffers: Sequence[Buffer]) -> int:
    """The most bytes live at once: a lower bound no offset assignment can beat."""
    steps = {p[1] for b in buffers for p in b.pieces()}
    return max((sum(b.size_at(s) for b in buffers) for s in steps), default=0)
