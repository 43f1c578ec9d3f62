"""``mirage batch``: many ``mirage generate`` runs from a manifest, on local workers or a Ray cluster.

``manifest`` (rows -> validated jobs), ``workers`` (the worker that runs a job through the
pipeline with its models kept loaded; in-process and process pools), ``ray_backend`` (Ray actors),
``runner`` (dispatch, retries, skip/resume, Ctrl-C), ``records`` (batch.json), ``display`` (the
live table), ``bench`` (the timing table in docs/batch.md).
"""
