"""Instructions per inference on Cortex-M4, counted deterministically with Unicorn.

QEMU runs the firmware fast but does not count instructions in a form a program can read
back cheaply; Unicorn (QEMU's CPU core as a library) runs one function of the same ELF
under a hook. `count_instructions(elf, name, inputs)`:

1. reads the ELF (`Elf32`: PT_LOAD segments and the symbol table, a few dozen lines of
   `struct`, no extra dependency), maps the AN386 regions (code at 0x00000000, RAM at
   0x20000000, 4 MB each, as `firmware/mps2_an386.ld` lays them out) and loads each
   segment at its run-time address, so .data holds its initial values and .bss is zero;
2. for each input: writes it into the firmware's `tinyops_input` buffer, sets r0/r1 to
   `tinyops_input`/`tinyops_output`, SP to the top of RAM, LR to a return address outside
   any code (`RETURN_ADDRESS`, Thumb bit set) and runs from `tinyops_<name>_invoke` until
   the PC reaches that address, i.e. until invoke returns;
3. counts instructions with a basic-block hook: Unicorn reports each translated block it
   executes (address, size in bytes); the number of instructions in a block is fixed (a
   Thumb-2 halfword whose top five bits are 0b11101, 0b11110 or 0b11111 starts a 32-bit
   instruction, any other a 16-bit one), decoded once per block and cached. A block runs
   to its end or not at all (the only exits are branches, which end blocks), so the sum
   is exact: it equals a per-instruction hook's count (tests/compile/test_compile_icount.py
   checks both on a whole model). Instructions skipped by a failed IT condition count as
   executed, as they occupy an issue slot on the M4 (Unicorn's per-instruction hook does
   not fire for them, so that mode counts an IT instruction's whole block itself).
4. reads `tinyops_output` back, so the caller can check that the counted run computed
   the same bytes as QEMU and the host build.

Latency and energy (`Estimate`): cycles ≈ instructions (the Cortex-M4 issues one
instruction per cycle; loads, multiply-accumulates with 64-bit results, taken branches
and flash wait states cost more, so this is a lower bound on cycles, typically within
1.2-1.5x for these kernels), latency = instructions / clock, energy = latency × the
board's typical active power (the board catalog's `clock_hz` and `active_power_mw`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinyops.compile.errors import CompileError

FLASH_BASE, FLASH_SIZE = 0x00000000, 4 << 20
RAM_BASE, RAM_SIZE = 0x20000000, 4 << 20
# Where invoke "returns" to: unmapped-code-free, never executed (emulation stops there).
RETURN_ADDRESS = 0x0FFF_FFF0
RETURN_PAGE = 0x0FFF_F000
# Runaway guard: no int8 model of the sizes tinyops targets needs a billion instructions.
MAX_INSTRUCTIONS = 1_000_000_000
# A Thumb-2 halfword whose top five bits are one of these starts a 32-bit instruction.
THUMB32_PREFIXES = frozenset({0b11101, 0b11110, 0b11111})


@dataclass(frozen=True)
class Segment:
    vaddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class Elf32:
    """The parts of a 32-bit little-endian ARM ELF that running a function needs."""

    segments: tuple[Segment, ...]
    symbols: dict[str, tuple[int, int]]  # name -> (value, size)

    @staticmethod
    def read(path: Path) -> Elf32:
        raw = Path(path).read_bytes()
        if raw[:4] != b"\x7fELF" or raw[4] != 1 or raw[5] != 1:
            raise CompileError(f"{path}: not a 32-bit little-endian ELF")
        (phoff, shoff) = struct.unpack_from("<II", raw, 28)
        (phentsize, phnum, shentsize, shnum) = struct.unpack_from("<HHHH", raw, 42)
        segments = []
        for i in range(phnum):
            p_type, p_offset, p_vaddr, _, p_filesz, p_memsz = struct.unpack_from(
                "<IIIIII", raw, phoff + i * phentsize
            )
            if p_type == 1 and p_memsz:  # PT_LOAD
                segments.append(Segment(p_vaddr, raw[p_offset : p_offset + p_filesz], p_memsz))
        sections = [
            struct.unpack_from("<IIIIIIIIII", raw, shoff + i * shentsize) for i in range(shnum)
        ]
        symbols: dict[str, tuple[int, int]] = {}
        for sh in sections:
            if sh[1] != 2:  # SHT_SYMTAB
                continue
            strtab = sections[sh[6]]
            str_off = strtab[4]
            for k in range(sh[5] // 16):
                st_name, st_value, st_size = struct.unpack_from("<III", raw, sh[4] + 16 * k)
                end = raw.index(b"\0", str_off + st_name)
                name = raw[str_off + st_name : end].decode("ascii", "replace")
                if name:
                    symbols[name] = (st_value, st_size)
        return Elf32(tuple(segments), symbols)

    def symbol(self, name: str) -> int:
        if name not in self.symbols:
            raise CompileError(f"symbol {name} is not in the ELF")
        return self.symbols[name][0]


def thumb_instruction_count(code: bytes) -> int:
    """Instructions in a run of Thumb-2 code (16- and 32-bit encodings)."""
    n = 0
    i = 0
    while i + 1 < len(code):
        halfword = code[i] | (code[i + 1] << 8)
        i += 4 if halfword >> 11 in THUMB32_PREFIXES else 2
        n += 1
    return n


@dataclass(frozen=True)
class Estimate:
    """Instructions per inference turned into latency and energy on one board."""

    board: str
    instructions: int
    clock_hz: int
    active_power_mw: float

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.instructions / self.clock_hz

    @property
    def energy_uj(self) -> float:
        return self.latency_ms * self.active_power_mw  # ms x mW = µJ


def estimate_for_board(instructions: int, board_id: str) -> Estimate:
    from tinyops.targets.catalog import load_board

    board = load_board(board_id)
    return Estimate(board.id, instructions, board.clock_hz, board.active_power_mw)


@dataclass(frozen=True)
class CountedRun:
    """Per input: the instructions invoke executed and the output it wrote."""

    instructions: tuple[int, ...]
    outputs: NDArray[np.int8]


class M4Emulator:
    """One AN386 firmware ELF loaded into Unicorn, ready to run `tinyops_<name>_invoke`."""

    def __init__(self, elf_path: Path, name: str, *, per_instruction: bool = False) -> None:
        from unicorn import (
            UC_ARCH_ARM,
            UC_HOOK_BLOCK,
            UC_HOOK_CODE,
            UC_MODE_MCLASS,
            UC_MODE_THUMB,
        )
        from unicorn.arm_const import UC_CPU_ARM_CORTEX_M4
        from unicorn.unicorn_py3.unicorn import Uc

        self.elf = Elf32.read(elf_path)
        self.invoke = self.elf.symbol(f"tinyops_{name}_invoke") & ~1
        self.input_addr = self.elf.symbol("tinyops_input")
        self.output_addr = self.elf.symbol("tinyops_output")
        uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        uc.ctl_set_cpu_model(UC_CPU_ARM_CORTEX_M4)
        uc.mem_map(FLASH_BASE, FLASH_SIZE)
        uc.mem_map(RAM_BASE, RAM_SIZE)
        uc.mem_map(RETURN_PAGE, 0x1000)
        for seg in self.elf.segments:
            uc.mem_write(seg.vaddr, seg.data)
        self.uc = uc
        self.count = 0
        self._it_start = self._it_end = 0
        self._block_counts: dict[int, int] = {}
        if per_instruction:
            uc.hook_add(UC_HOOK_CODE, self._on_instruction)
        else:
            uc.hook_add(UC_HOOK_BLOCK, self._on_block)

    def _on_instruction(self, uc: Any, address: int, size: int, user: Any) -> None:
        # Unicorn calls this hook only for instructions whose IT condition passed, so an
        # IT instruction counts its whole block here and the block's own hooks are ignored.
        if self._it_start < address < self._it_end:
            return
        self.count += 1
        if size == 2:
            halfword = int.from_bytes(uc.mem_read(address, 2), "little")
            mask = halfword & 0xF
            if halfword >> 8 == 0xBF and mask:
                slots = 4 - ((mask & -mask).bit_length() - 1)
                end = address + 2
                for _ in range(slots):
                    first = int.from_bytes(uc.mem_read(end, 2), "little")
                    end += 4 if first >> 11 in THUMB32_PREFIXES else 2
                self.count += slots
                self._it_start, self._it_end = address, end

    def _on_block(self, uc: Any, address: int, size: int, user: Any) -> None:
        key = (address << 16) | size
        n = self._block_counts.get(key)
        if n is None:
            n = thumb_instruction_count(bytes(uc.mem_read(address, size)))
            self._block_counts[key] = n
        self.count += n

    def run(self, x: NDArray[np.int8], output_size: int) -> tuple[int, NDArray[np.int8]]:
        """One inference on input `x`: (instructions executed, output bytes)."""
        from unicorn.arm_const import (
            UC_ARM_REG_LR,
            UC_ARM_REG_R0,
            UC_ARM_REG_R1,
            UC_ARM_REG_SP,
        )
        from unicorn.unicorn_py3.unicorn import UcError

        uc = self.uc
        uc.mem_write(self.input_addr, np.ascontiguousarray(x, dtype=np.int8).tobytes())
        uc.reg_write(UC_ARM_REG_R0, self.input_addr)
        uc.reg_write(UC_ARM_REG_R1, self.output_addr)
        uc.reg_write(UC_ARM_REG_SP, RAM_BASE + RAM_SIZE)
        uc.reg_write(UC_ARM_REG_LR, RETURN_ADDRESS | 1)
        self.count = 0
        try:
            uc.emu_start(self.invoke | 1, RETURN_ADDRESS, count=MAX_INSTRUCTIONS)
        except UcError as exc:
            raise CompileError(
                f"invoke faulted under Unicorn after {self.count:,} instructions: {exc}"
            ) from exc
        out = np.frombuffer(bytes(uc.mem_read(self.output_addr, output_size)), dtype=np.int8)
        return self.count, out


def count_instructions(
    elf: Path,
    name: str,
    inputs: NDArray[np.int8] | Sequence[NDArray[np.int8]],
    output_size: int,
    *,
    per_instruction: bool = False,
) -> CountedRun:
    """Run invoke once per input under Unicorn; instructions and outputs per input."""
    emulator = M4Emulator(elf, name, per_instruction=per_instruction)
    counts: list[int] = []
    outs: list[NDArray[np.int8]] = []
    for x in inputs:
        n, out = emulator.run(np.asarray(x, dtype=np.int8).reshape(-1), output_size)
        counts.append(n)
        outs.append(out)
    return CountedRun(tuple(counts), np.stack(outs))
