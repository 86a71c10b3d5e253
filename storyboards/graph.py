"""ShotGraph: which shots continue which (chains), and what may render in parallel."""

from __future__ import annotations

from dataclasses import dataclass

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

    def chain_of(self, shot_id: str) -> Chain:
        for chain in self.chains:
            if shot_id in chain.shot_ids:
                return chain
        raise KeyError(shot_id)

    def predecessor(self, shot_id: str) -> str | None:
        ids = self.chain_of(shot_id).shot_ids
        i = ids.index(shot_id)
        return ids[i - 1] if i else None

    def downstream(self, shot_id: str) -> tuple[str, ...]:
        """`shot_id` and every shot after it in its chain: what a re-render from it must redo."""
        ids = self.chain_of(shot_id).shot_ids
        return ids[ids.index(shot_id):]

    def order(self) -> list[str]:
        """A topological order: chains one after another, each in sequence."""
        return [sid for chain in self.chains for sid in chain.shot_ids]

    def independent(self, a: str, b: str) -> bool:
        return self.chain_of(a).index != self.chain_of(b).index
