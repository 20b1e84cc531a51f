"""The report stage's library: from the sweep's tables to the report (no file paths here).

- :mod:`lmcot.report.build`: the whole report from the results (``build``), which the stage writes out.
- :mod:`lmcot.report.tables`: the compact tables, one per question, and the full tables' summaries.
- :mod:`lmcot.report.figures`: the figures (matplotlib, seaborn).
- :mod:`lmcot.report.summary`: the summary: what was run, the endpoints, the verdict on each claim.
- :mod:`lmcot.report.markdown`: the written report, one section per question.
- :mod:`lmcot.report.metrics`: the headline metrics and the plots' data that DVC compares.
"""
