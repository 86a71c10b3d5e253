"""What people read about a storyboard: status rows, seam notes, the render summary. Plain Python over the store,
so `milimo status`, `milimo qa` and the dashboard use it without importing Prefect (the flow does too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storyboards.seams import SeamThresholds, seam_verdict
from storyboards.store import SeamView, ShotStatus, Store, TakeReview


def current_reviews(store: Store, storyboard: str) -> dict[str, TakeReview]:
    """Each shot's current take's review, by shot id (one read)."""
    return {r.shot_id: r for r in store.reviews(storyboard) if r.current}


def verdict_labels(store: Store, storyboard: str) -> dict[str, str]:
    """Each shot's chosen take's review as the preview burns it in ("approved by Ada"); none while pending."""
    return {shot: r.said for shot, r in current_reviews(store, storyboard).items() if r.state != "pending"}


def seam_note(seam: SeamView, thresholds: SeamThresholds) -> str:
    """`-> boat cut 0.42` / `@48 seg 1.9 FLAGGED`: one seam as a short caption (scored on today's thresholds)."""
    score, flagged = seam_verdict(seam, thresholds)
    where = f"@{seam.frame} seg" if seam.kind == "segment" else f"-> {seam.right_shot_id[:10]} {seam.kind}"
    return f"{where} {score:.2f}" + (" FLAGGED" if flagged else "")


def seam_notes(seams: list[SeamView], thresholds: SeamThresholds) -> dict[str, list[str]]:
    """Each shot's seams (the cut after it, its segment boundaries) as short captions, by shot id."""
    notes: dict[str, list[str]] = {}
    for seam in seams:
        notes.setdefault(seam.left_shot_id, []).append(seam_note(seam, thresholds))
    return notes


def status_notes(row: ShotStatus, seams: list[str], review: TakeReview | None = None) -> list[str]:
    """What `milimo status` (and `milimo markers`) says beside a shot: its current take's review (`review`: the
    verdict, who, its newest note), a newer try that did not become current (its newest take's status: a shot
    whose only take failed is otherwise just "not rendered"), a take rendering now, overrides, a changed spec,
    its seams."""
    notes = []
    if review is not None and (review.state != "pending" or review.notes):
        said = review.said if review.state != "pending" else "not reviewed"
        if review.notes:
            newest = review.notes[-1]
            said += f", {len(review.notes)} note(s), newest {newest.author}: {newest.text[:60]}"
        notes.append(said)
    latest = row.latest_status
    if latest and latest != row.status and latest != "running":
        notes.append(f"last try {latest}")
    if row.running:
        step = f" {row.running.get('stage')} step {row.running.get('step')}/{row.running.get('total')}" \
            if row.running.get("total") else ""
        notes.append(f"running: take {row.running['take']} on {row.running.get('host')}{step}")
    if row.overrides:
        notes.append("override: " + ", ".join(f"{k}={v!r}" for k, v in sorted(row.overrides.items())))
    if not row.spec_is_current and row.take_number:
        notes.append("spec changed since this take")
    return notes + [f"seam {note}" for note in seams]


@dataclass(frozen=True)
class Summary:
    """A render's outcome per shot, for the flow's artifacts and the CLI's last lines."""

    rows: list[dict[str, Any]]

    @property
    def markdown(self) -> str:
        header = "| shot | chain | take | status | this run | spec | seconds |\n|---|---|---|---|---|---|---|\n"
        return header + "".join(f"| {r['shot']} | {r['chain']} | {r['take']} | {r['status']} | {r['this run']} | "
                                f"`{r['spec']}` | {r['seconds']} |\n" for r in self.rows)


def summarise(rows: list[ShotStatus], rendered: list[str], failed: dict[str, str],
              stopped: dict[str, str] | None = None) -> Summary:
    out = []
    for r in rows:
        this_run = ("rendered" if r.shot_id in rendered else "failed" if r.shot_id in failed
                    else "stopped" if r.shot_id in (stopped or {}) else "kept")
        out.append({"shot": r.shot_id, "chain": r.chain_index, "take": r.take_number, "status": r.status,
                    "this run": this_run, "spec": (r.spec_hash or "")[:12],
                    "seconds": round(r.seconds, 2) if r.seconds is not None else None})
    return Summary(out)


def board_status(store: Store, name: str, thresholds: SeamThresholds) -> tuple[list[ShotStatus], dict[str, list[str]]]:
    """The rows of `milimo status` and each shot's seam captions: two reads of the store."""
    return store.status(name), seam_notes(store.seams(name), thresholds)
