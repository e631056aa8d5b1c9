"""The report page of a run: ``cellcube report RUN_DIR`` and the end of ``cellcube train``.

One self-contained HTML file (:mod:`cellcube.report.html`) with the run, every model's test
metrics and intervals, the training curves, wins and losses against identity, the cube at work
step by step, a 2D map of the predictions and, for a multi-teacher run, the teachers.
"""

from cellcube.report.html import build_page, write_report_html

__all__ = ["build_page", "write_report_html"]
