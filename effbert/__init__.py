"""effbert: which inference techniques make DistilBERT cheaper in energy on GLUE, at what cost.

A thin helper under the notebooks, one job per module, imports pointing down this list:
``config`` (paths) · ``tasks``, ``data``, ``packed`` (GLUE rows, batches, packed tokens) ·
``techniques`` (the vocabulary and one apply function per axis) · ``models`` (checkpoints) ·
``params``, ``profiles`` (settings) · ``energy``, ``environment``, ``metrics`` · ``schema``,
``stats``, ``results``, ``claims``, ``tables``, ``checks``, ``runs`` (records and what they
say) · ``windows``, ``plan``, ``kernels``, ``e2e``, ``measure`` (one cell) · ``pool``,
``sweep``, ``train``, ``finetune``, ``worker`` (running many) · ``plots``, ``figures``,
``floor``, ``report``, ``runner``, ``cli`` (what a reader sees).
"""

__version__ = "0.1.0"
