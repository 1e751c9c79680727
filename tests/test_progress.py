"""Progress lines of long data stages (Ray Data's own bars are off): what a user watching a read
of millions of rows sees, and that a short stage stays silent."""

import logging
import time

from training.data.progress import StageProgress


def _lines(run) -> list:
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("training.data.progress")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as the CLI's logging set-up does for "training"
    try:
        run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return [r.getMessage() for r in records]


def test_a_long_stage_reports_rows_rate_and_eta_then_its_end():
    def stage():
        with StageProgress("checking values and fitting features", total_rows=1000, every_s=0.05) as p:
            p.advance(250)
            deadline = time.monotonic() + 30
            while p.lines < 2:  # wait for two progress lines, not for a time
                assert time.monotonic() < deadline
                time.sleep(0.01)

    lines = _lines(stage)
    assert lines[0].startswith("data: checking values and fitting features: 250/1,000 rows (25%, ")
    assert "rows/s, ETA " in lines[0]
    assert lines[-1].startswith("data: checking values and fitting features done in ")


def test_an_uncounted_stage_says_how_long_it_has_run():
    def stage():
        with StageProgress("reading /data/tx/", every_s=0.05) as p:
            while p.lines < 1:
                time.sleep(0.01)

    lines = _lines(stage)
    assert lines[0].startswith("data: reading /data/tx/ (") and lines[0].endswith("s so far)")


def test_a_short_stage_prints_nothing():
    def stage():
        with StageProgress("reading", total_rows=10, every_s=30) as p:
            p.advance(10)

    assert _lines(stage) == []
