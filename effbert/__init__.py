"""effbert: which inference techniques make DistilBERT cheaper in energy on GLUE, at what cost.

One module per pipeline stage: ``config`` (paths, profiles), ``tasks`` and ``data`` (GLUE
tasks and batches), ``models`` (checkpoints and techniques), ``energy`` (meters), ``bench``
(measured cells), ``metrics``, ``results`` (records on disk), ``plots``, ``finetune`` and
``runner`` (papermill).
"""

__version__ = "0.1.0"
