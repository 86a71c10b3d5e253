"""ShotGraph: which shots continue which (chains), and what may render in parallel."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .load import Storyboard


@dataclass(frozen=True)
class Chain:
    """A run of shots linked by `handoff: previous`: each starts from its predecessor's tail."""

    index: int
    shot_ids: tuple[str, ...]

    @property
    def head(self) -> str:
        return self.shot_ids[0]


@dataclass(frozen=True)
class ShotGraph:
    chains: tuple[Chain, ...]

    @classmethod
    def of(cls, storyboard: Storyboard) -> ShotGraph:
        chains: list[list[str]] = []
        for shot in storyboard.shots:
            if chains and shot.metadata.get("handoff") == "previous" and not shot.follows_gap:
                chains[-1].append(shot.shot_id)
            else:
                chains.append([shot.shot_id])
        return cls(tuple(Chain(i, tuple(ids)) for i, ids in enumerate(chains)))

    @cached_property
    def _where(self) -> dict[str, tuple[Chain, int]]:
        """Each shot's chain and place in it: a lookup per shot, not a search (a 5,000-shot plan was quadratic)."""
        return {sid: (chain, i) for chain in self.chains for i, sid in enumerate(chain.shot_ids)}

    def chain_of(self, shot_id: str) -> Chain:
        return self._where[shot_id][0]

    def predecessor(self, shot_id: str) -> str | None:
        chain, i = self._where[shot_id]
        return chain.shot_ids[i - 1] if i else None

    def upstream(self, shot_id: str) -> tuple[str, ...]:
        """Every shot before `shot_id` in its chain: what it continues from."""
        chain, i = self._where[shot_id]
        return chain.shot_ids[:i]

    def downstream(self, shot_id: str) -> tuple[str, ...]:
        """`shot_id` and every shot after it in its chain: what a re-render from it must redo."""
        chain, i = self._where[shot_id]
        return chain.shot_ids[i:]

    def order(self) -> list[str]:
        """A topological order: chains one after another, each in sequence."""
        return [sid for chain in self.chains for sid in chain.shot_ids]

    def independent(self, a: str, b: str) -> bool:
        return self.chain_of(a).index != self.chain_of(b).index
