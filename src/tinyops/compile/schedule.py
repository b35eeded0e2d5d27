"""Execution order: move an operator earlier when that lets a large tensor die sooner.

A .tflite lists its operators in one valid order; the converter does not pick it for
memory. In a ResNet block, `x → conv(stride 2) → conv → ADD` with the shortcut
`x → conv 1x1 (stride 2) → ADD` listed after the second convolution, the block input `x`
stays live while the second convolution runs. Run the shortcut first and the strided
convolution becomes x's last reader: it writes its 8 KB result over x's head (behind its
reads) and x's tail is freed, so the second convolution runs beside 8 KB instead of
16 KB. (Running the shortcut right before the second convolution costs the same arena;
the search takes the order that frees bytes soonest.)

`schedule(graph, calls)` searches such moves by measuring, not by pattern: for each
operator that is the last reader of one of its inputs, it tries each earlier position it
could legally run at (after the operators that write its inputs, at most `WINDOW`
positions back) and plans the whole model for it (the same in-place rules, fused groups
and greedy placement as the compiler uses). It keeps the move that lowers the arena most
— ties broken by the bytes live summed over all operators, so a move that frees memory
away from the peak still counts — and repeats until no move helps. A move never crosses an
operator that reads its output (they all come after it), so every order it yields
computes the same tensors; the tests compare every model with TFLM.

`reorder` renumbers the operators (indices are execution positions everywhere after
this pass) and renames each call's constant arrays (`op<i>_bias`, ...) with its new index.
"""

from __future__ import annotations

from dataclasses import replace

from tinyops.compile.ir import Graph
from tinyops.compile.lower import ConstArray, KernelCall, Ref, fusions, inplace_kernels
from tinyops.compile.planner import buffers_of, plan_memory

# How many positions back an operator may move (keeps the search small; ResNet's shortcut
# moves one).
WINDOW = 8
# The search stops after this many accepted moves (each strictly lowers the cost).
MAX_MOVES = 64


def plan_cost(graph: Graph, calls: tuple[KernelCall, ...]) -> tuple[int, int]:
    """(arena bytes, bytes live summed over operators) of the compiler's plan."""
    live = buffers_of(graph, inplace_kernels(calls), fusions(graph, calls))
    plan = plan_memory(live.buffers)
    spread = sum(n * (b - a + 1) for buf in live.buffers for n, a, b in buf.pieces())
    return plan.arena_bytes, spread


def reorder(
    graph: Graph, calls: tuple[KernelCall, ...], order: list[int]
) -> tuple[Graph, tuple[KernelCall, ...]]:
    """The graph and calls with operator `order[k]` (a current index) run k-th."""
    position = {old: new for new, old in enumerate(order)}
    operators = tuple(replace(graph.operators[old], index=new) for new, old in enumerate(order))
    by_index = {c.op_index: c for c in calls}
    return replace(graph, operators=operators), tuple(
        _renumbered(by_index[old], position[old]) for old in order
    )


def _renumbered(call: KernelCall, new: int) -> KernelCall:
    if call.op_index == new:
        return call
    old_prefix, new_prefix = f"op{call.op_index}_", f"op{new}_"

    def rename(name: str) -> str:
        return new_prefix + name[len(old_prefix) :] if name.startswith(old_prefix) else name

    fields = tuple(
        (k, Ref(rename(v.name)) if isinstance(v, Ref) and v.name is not None else v)
        for k, v in call.fields
    )
    arrays = tuple(ConstArray(rename(a.name), a.ctype, a.values) for a in call.arrays)
    return replace(call, op_index=new, fields=fields, arrays=arrays)


def _candidates(graph: Graph) -> list[list[int]]:
    """Orders that move one operator earlier, where it is the last reader of an input."""
    ops = graph.operators
    writer: dict[int, int] = {t: op.index for op in ops for t in op.outputs}
    last_reader: dict[int, int] = {}
    for op in ops:
        for t in op.inputs:
            if t >= 0 and not graph.tensor(t).constant:
                last_reader[t] = op.index
    found = []
    current = list(range(len(ops)))
    for op in ops:
        ins = [t for t in op.inputs if t >= 0 and not graph.tensor(t).constant]
        if not any(last_reader[t] == op.index and t in writer for t in ins):
            continue
        earliest = max((writer[t] + 1 for t in ins if t in writer), default=0)
        for j in range(max(earliest, op.index - WINDOW), op.index):
            order = [*current[:j], op.index, *current[j : op.index], *current[op.index + 1 :]]
            found.append(order)
    return found


def schedule(
    graph: Graph, calls: tuple[KernelCall, ...]
) -> tuple[Graph, tuple[KernelCall, ...], tuple[int, ...]]:
    """A lower-memory execution order: the reordered graph and calls, and for each new
    position the operator's index in the model."""
    origin = list(range(len(graph.operators)))
    cost = plan_cost(graph, calls)
    for _ in range(MAX_MOVES):
        best: tuple[tuple[int, int], list[int]] | None = None
        for order in _candidates(graph):
            g, c = reorder(graph, calls, order)
            trial = plan_cost(g, c)
            if trial < cost and (best is None or trial < best[0]):
                best = (trial, order)
        if best is None:
            break
        cost, order = best
        graph, calls = reorder(graph, calls, order)
        origin = [origin[i] for i in order]
    return graph, calls, tuple(origin)
