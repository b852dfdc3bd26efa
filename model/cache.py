"""`PLTCache`: the incremental-decoding state of a Parallel Loop Transformer.

What a PLT needs to continue a sequence (docs/plt.md §3), per layer:
- loop 0's keys/values for every position (the global branch of every loop
  reads them): this is the only part that grows, as in a 1-loop model;
- for each loop r >= 1, its own keys/values for the last `window + 1 + slack`
  positions only (a ring: slot = position % ring_size), enough for the local
  branch and for rolling back up to `slack` tokens exactly;
- for each loop r < R-1, that loop's output at the last `ring_size` positions
  (the CLP carry: loop r+1 at token t takes loop r's output at t-1).

Positions here are cache columns. With left padding a row's real tokens are
contiguous, so a column distance is a token distance and masks do the rest.

API used by the chat layer (multi-turn sessions):
    cache = model.new_cache(batch_size=1)      # or PLTCache(config, batch_size=1)
    out = model(input_ids, past_key_values=cache, use_cache=True)  # appends, logits for those tokens
    cache.get_seq_length()                    # tokens held
    cache.can_crop(n) -> bool                 # can it roll back to n tokens exactly?
    cache.crop(n)                             # roll back; ValueError when it cannot (re-prefill then)

Pipelined draft verification (docs/plt.md §4) lets loop 0 run ahead of loop 1:
`ahead` tokens after the `get_seq_length()` held ones have loop 0's keys and
output (carry) but not yet loop 1's. Every other forward needs `ahead == 0`;
any `crop` drops them.

The compiled decode step (model/compiled.py) uses the same cache, static or
not: `allocate` makes every buffer, loop 0's with room for a bucket of columns,
and the `*_at` methods read and write at a position given as a tensor, so one
traced graph serves every token of the bucket (no Python int of the length in it).
"""
from __future__ import annotations

import torch

from .configuration_plt import IQuestPLTCoderConfig

DEFAULT_SLACK = 16


class PLTCache:
    """Loop-0 K/V for every token, plus constant-size rings for the other loops."""

    is_compileable = False  # read by generate(): never auto-compile around this cache
    is_croppable = False  # read by transformers 5's generate(): crop() is exact only within the slack

    def __init__(self, config: IQuestPLTCoderConfig, batch_size: int = 1, slack: int = DEFAULT_SLACK,
                 max_length: int | None = None):
        """`max_length`: preallocate loop 0's buffers for that many tokens at the first write (a static
        cache: the buffers never move, and a longer sequence is an error); None: grow as needed."""
        if slack < 0:
            raise ValueError(f"slack must be >= 0, got {slack}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        self.batch_size = batch_size
        self.num_loops = config.plt_num_loops
        self.window = config.plt_window
        self.slack = slack
        self.ring_size = self.window + 1 + slack
        layers = config.num_hidden_layers
        self._dims = (config.num_key_value_heads, config.head_dim, config.hidden_size)
        self._length = 0  # tokens through every loop
        self._ahead = 0  # tokens after those through loop 0 only (pipelined verification)
        self._local_start = 0  # oldest position whose ring entries are held
        self._carry_start = 0  # oldest position whose carry is held (loop 0 may have run ahead)
        self._k0: list[torch.Tensor | None] = [None] * layers  # [B, Hkv, capacity, Dh]
        self._v0: list[torch.Tensor | None] = [None] * layers
        self._ring_k: list[torch.Tensor | None] = [None] * layers  # [R-1, B, Hkv, ring_size, Dh]
        self._ring_v: list[torch.Tensor | None] = [None] * layers
        self._carry: torch.Tensor | None = None  # [R-1, B, ring_size, d]; loop r's output at slot

    # --- the public API ----------------------------------------------------

    @property
    def is_linear(self) -> list[bool]:
        """Read by transformers 5's generate(): no layer is a recurrent (linear-attention) state."""
        return [False] * len(self._k0)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens (cache columns) held by every loop."""
        return self._length

    @property
    def ahead(self) -> int:
        """Tokens after `get_seq_length()` that went through loop 0 only (pipelined verification)."""
        return self._ahead

    @property
    def is_croppable(self) -> bool:
        """transformers >= 5.24 checks this before assisted decoding: `crop` rolls back exactly (within the slack)."""
        return True

    def activate_past_recording(self) -> None:
        """transformers >= 5.24 calls this before assisted decoding so a later `crop` can roll back.
        Nothing to do: the rings always keep `slack` positions beyond the window for that."""

    def can_crop(self, length: int) -> bool:
        """True when rolling back to `length` tokens keeps every later logit exact.

        The next token at position `length` needs loop r's keys at
        `length - window .. length - 1` and its carry at `length - 1`; the rings
        hold `window + 1 + slack` positions, so up to `slack + 1` tokens can go.
        """
        return length == 0 or self._shortest_crop() <= length <= self._length

    def crop(self, length: int) -> None:
        """Roll back to the first `length` tokens (negative: drop that many from the end).

        Raises ValueError when the rings no longer hold what the next token would
        need (a rollback of more than `slack + 1` tokens); the caller then re-prefills.
        """
        if length < 0:
            length = self._length + length
        if not self.can_crop(length):
            raise ValueError(
                f"cannot roll the PLT cache back from {self._length} to {length} tokens: loops >= 1 keep "
                f"their keys for the last {self.ring_size} positions only (window {self.window} + 1 + slack "
                f"{self.slack}), so it can go back to {self._shortest_crop()} tokens at the least (or to 0); "
                "re-prefill from scratch instead"
            )
        self._length, self._ahead = length, 0
        if length == 0:
            self._local_start = self._carry_start = 0

    def _shortest_crop(self) -> int:
        """The smallest length > 0 a crop can keep exactly: the ring must hold the window before it, the
        carry the position before it."""
        ring = 1 if self._local_start == 0 else self._local_start + max(self.window, 1)
        return max(ring, self._carry_start + 1)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select/reorder batch rows (beam search)."""
        def pick(t, dim):
            return None if t is None else t.index_select(dim, beam_idx.to(t.device))

        self._k0 = [pick(t, 0) for t in self._k0]
        self._v0 = [pick(t, 0) for t in self._v0]
        self._ring_k = [pick(t, 1) for t in self._ring_k]
        self._ring_v = [pick(t, 1) for t in self._ring_v]
        self._carry = pick(self._carry, 1)
        self.batch_size = len(beam_idx)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache's tensors (loop-0 buffers at their current capacity)."""
        tensors = [*self._k0, *self._v0, *self._ring_k, *self._ring_v, self._carry]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    # --- used by the model -------------------------------------------------

    def append_global(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store loop 0's k, v [B, Hkv, n, Dh] after the held (and ahead) tokens; return all of them
        [B, Hkv, L+ahead+n, Dh]."""
        start = self._length + self._ahead
        end = start + k.shape[2]
        if self.max_length is not None and end > self.max_length:
            raise ValueError(f"the PLT cache was preallocated for {self.max_length} tokens and this call would "
                             f"hold {end}; make it with a larger max_length (model.new_cache(max_length=...))")
        if self._k0[layer] is None and self.max_length is not None:
            batch, heads, _, dim = k.shape
            # zeros, not garbage: the compiled step attends over unwritten columns (masked, but 0 * NaN is NaN)
            self._k0[layer], self._v0[layer] = (k.new_zeros((batch, heads, self.max_length, dim)) for _ in "kv")
        elif self._k0[layer] is None or self._k0[layer].shape[2] < end:
            self._k0[layer], self._v0[layer] = _grown(self._k0[layer], k, end), _grown(self._v0[layer], v, end)
        self._k0[layer][:, :, start:end] = k
        self._v0[layer][:, :, start:end] = v
        return self.global_kv(layer, k.shape[2])

    def global_kv(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Loop 0's keys/values for the held (and ahead) tokens plus the `n` being processed."""
        end = self._length + self._ahead + n
        return self._k0[layer][:, :, :end], self._v0[layer][:, :, :end]

    def ring(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loops >= 1 rings of one layer, [R-1, B, Hkv, ring_size, Dh] (zeros until written)."""
        if self._ring_k[layer] is None:
            batch, heads, _, dim = like.shape
            shape = (self.num_loops - 1, batch, heads, self.ring_size, dim)
            self._ring_k[layer] = like.new_zeros(shape)
            self._ring_v[layer] = like.new_zeros(shape)
        return self._ring_k[layer], self._ring_v[layer]

    def write_ring(self, layer: int, loop: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store loop `loop`'s k, v [B, Hkv, n, Dh] for positions L..L+n-1 (the last ring_size of them)."""
        ring_k, ring_v = self.ring(layer, k)
        slots, keep = self._slots(k.shape[2], k.device)
        ring_k[loop - 1].index_copy_(2, slots, k[:, :, -keep:])
        ring_v[loop - 1].index_copy_(2, slots, v[:, :, -keep:])

    def _carry_buffer(self, like: torch.Tensor) -> torch.Tensor:
        """The carry [R-1, B, ring_size, d], made (zeros) on first use like `like` [B, n, d]."""
        if self._carry is None:
            batch, _, dim = like.shape
            self._carry = like.new_zeros((self.num_loops - 1, batch, self.ring_size, dim))
        return self._carry

    def carry(self, loop: int, like: torch.Tensor) -> torch.Tensor:
        """Loop `loop`'s output at the last held position, [B, 1, d]; zeros for an empty cache."""
        self._carry_buffer(like)
        if self._length == 0:
            return torch.zeros_like(self._carry[loop, :, :1])
        slot = (self._length - 1) % self.ring_size
        return self._carry[loop, :, slot:slot + 1].clone()  # a copy: write_carry may reuse the slot

    def write_carry(self, loop: int, hidden: torch.Tensor) -> None:
        """Store loop `loop`'s output [B, n, d] for positions L..L+n-1 (the last ring_size of them)."""
        self._carry_buffer(hidden)
        slots, keep = self._slots(hidden.shape[1], hidden.device)
        self._carry[loop].index_copy_(1, slots, hidden[:, -keep:])

    def ring_positions(self, length: int | None = None, device=None) -> torch.Tensor:
        """[ring_size] the position each ring slot holds once `length` tokens are in, -1 where none."""
        length = self._length if length is None else length
        start = max(self._local_start, length - self.ring_size)
        slot = torch.arange(self.ring_size, device=device)
        position = length - 1 - (length - 1 - slot) % self.ring_size
        return torch.where(position >= start, position, -1)

    def advance(self, n: int) -> None:
        """Commit `n` processed tokens (after every layer and loop has written them)."""
        self._length += n
        self._local_start = max(self._local_start, self._length - self.ring_size)
        self._carry_start = max(self._carry_start, self._length + self._ahead - self.ring_size)

    # --- pipelined verification (loop 0 ahead of loop 1; R = 2) ---------------

    def carry_span(self, start: int, n: int, like: torch.Tensor) -> torch.Tensor:
        """Loop 0's output at positions start..start+n-1 [B, n, d] (zeros at negative positions)."""
        carry = self._carry_buffer(like)
        positions = torch.arange(start, start + n, device=carry.device)
        held = carry[0].index_select(1, positions % self.ring_size)
        return held * (positions >= 0).to(held.dtype)[None, :, None]

    def write_carry_span(self, start: int, hidden: torch.Tensor) -> None:
        """Store loop 0's output [B, n, d] at positions start..start+n-1 (n <= ring_size)."""
        positions = torch.arange(start, start + hidden.shape[1], device=self._carry.device)
        self._carry[0].index_copy_(1, positions % self.ring_size, hidden)

    def advance_pipelined(self, through_all: int, new_loop0: int) -> None:
        """Commit a pipelined pass: `through_all` tokens finished loop 1, `new_loop0` more went through loop 0."""
        self._ahead += new_loop0 - through_all
        if self._ahead < 0:
            raise ValueError("a pipelined pass cannot finish loop 1 for tokens loop 0 has not seen")
        self.advance(through_all)

    # --- the compiled decode step (static cache, position as a tensor) ------

    def allocate(self, dtype: torch.dtype, device: torch.device, columns: int) -> list[torch.Tensor]:
        """Make every buffer now, loop 0's with room for at least `columns` tokens (a static cache's:
        max_length), unwritten columns zero; return them all."""
        if self.max_length is not None and columns > self.max_length:
            raise ValueError(f"the PLT cache was preallocated for {self.max_length} tokens, not {columns}")
        kv_heads, head_dim, hidden = self._dims
        like = torch.empty((self.batch_size, kv_heads, 1, head_dim), dtype=dtype, device=device)
        for layer in range(len(self._k0)):
            if self._k0[layer] is None and self.max_length is not None:
                self._k0[layer], self._v0[layer] = (like.new_zeros((*like.shape[:2], self.max_length, head_dim))
                                                    for _ in "kv")
            elif self._k0[layer] is None or self._k0[layer].shape[2] < columns:
                self._k0[layer], self._v0[layer] = (_grown(buffer, like, columns) for buffer in (self._k0[layer],
                                                                                                 self._v0[layer]))
            self.ring(layer, like)
        if self._carry is None:
            self._carry = like.new_zeros((self.num_loops - 1, self.batch_size, self.ring_size, hidden))
        return [*self._k0, *self._v0, *self._ring_k, *self._ring_v, self._carry]

    def write_global_at(self, layer: int, position: torch.Tensor, span: int, k: torch.Tensor,
                        v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store loop 0's k, v [B, Hkv, 1, Dh] at column `position` [1]; return columns 0..span-1 [B, Hkv, span, Dh]."""
        self._k0[layer].index_copy_(2, position, k)
        self._v0[layer].index_copy_(2, position, v)
        return self._k0[layer][:, :, :span], self._v0[layer][:, :, :span]

    def write_ring_at(self, layer: int, position: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store loops 1..R-1's k, v [B, Hkv, R-1, Dh] (row r-1 = loop r) for `position` [1] in their rings."""
        slot = position % self.ring_size
        self._ring_k[layer].index_copy_(3, slot, k.permute(2, 0, 1, 3)[:, :, :, None])  # [R-1, B, Hkv, 1, Dh]
        self._ring_v[layer].index_copy_(3, slot, v.permute(2, 0, 1, 3)[:, :, :, None])

    def carry_at(self, loop: int, position: torch.Tensor) -> torch.Tensor:
        """Loop `loop`'s output at `position` - 1, [B, 1, d]; zeros at position 0."""
        held = self._carry[loop].index_select(1, (position - 1) % self.ring_size)
        return held * (position > 0).to(held.dtype)

    def write_carry_at(self, position: torch.Tensor, hidden: torch.Tensor) -> None:
        """Store loops 0..R-2's outputs [R-1, B, 1, d] at `position` [1]."""
        self._carry.index_copy_(2, position % self.ring_size, hidden)

    def ring_visible_at(self, position: torch.Tensor) -> torch.Tensor:
        """[S] which ring slots the token at `position` [1] sees once its own keys are in: the positions
        position-window..position (what `ring_positions` and the window give the eager step)."""
        slot = torch.arange(self.ring_size, device=position.device)
        held = position - (position - slot) % self.ring_size  # the position each slot holds
        return (held >= 0) & (held >= position - self.window)

    def _slots(self, n: int, device) -> tuple[torch.Tensor, int]:
        keep = min(n, self.ring_size)
        positions = torch.arange(self._length + n - keep, self._length + n, device=device)
        return positions % self.ring_size, keep


def _grown(buffer: torch.Tensor | None, like: torch.Tensor, needed: int) -> torch.Tensor:
    """A copy of `buffer` [B, Hkv, cap, Dh] with room for `needed` columns (+25%, multiple of 256); the
    new columns are zeros (the compiled step attends over unwritten columns: masked, but 0 * NaN is NaN)."""
    old = 0 if buffer is None else buffer.shape[2]
    capacity = -(-max(needed, old + old // 4) // 256) * 256
    batch, heads, _, dim = like.shape
    grown = like.new_empty((batch, heads, capacity, dim))
    grown[:, :, old:].zero_()
    if buffer is not None:
        grown[:, :, :old] = buffer
    return grown
