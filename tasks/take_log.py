"""A take's own log, beside its files (`OutputLayout.take_log`): what its render task said while it rendered that
take (Prefect's run logger: the device, the steps, how it ended, the traceback of a failure), with a first line
naming the take, who asked for it and where it renders. It outlives the Prefect server that ran the render (the
CLI's own server stops with it) and is written on whichever worker renders the take, into the shared output root:
the dashboard links it from the take and from the queue."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any

TASK_RUN_LOGGER = "prefect.task_runs"  # where `get_run_logger()` inside a task sends its records


class TakeLog(logging.Handler):
    """Appends the records of one task run (`task_run_id`) to `path` while open (a `with` block)."""

    def __init__(self, path: Path, task_run_id: str | None):
        super().__init__(logging.INFO)
        self.path, self.task_run_id = path, task_run_id
        self.stream: IO[str] | None = None
        self.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s",
                                            datefmt="%Y-%m-%d %H:%M:%S"))

    def __enter__(self) -> TakeLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.path, "a", encoding="utf-8", buffering=1)  # line by line: readable while it runs
        logging.getLogger(TASK_RUN_LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger(TASK_RUN_LOGGER).removeHandler(self)
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def said(self, text: str) -> None:
        """A line of the take's own (not sent to Prefect)."""
        self.handle(logging.LogRecord(TASK_RUN_LOGGER, logging.INFO, __file__, 0, text, None, None))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.pathname == __file__ or getattr(record, "task_run_id", None) == self.task_run_id

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(self.format(record) + "\n")
        except (OSError, ValueError):  # a full disk or a closed file never fails a render for its log
            self.stream = None
