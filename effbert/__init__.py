"""effbert: which inference techniques make DistilBERT cheaper in energy on GLUE, at what cost.

A thin helper under the notebooks, one job per module, imports pointing down this list:
``config`` (paths) · ``tasks``, ``data``, ``packed`` (GLUE rows, batches, packed tokens) ·
``techniques`` (the vocabulary and one apply function per axis) · ``models`` (checkpoints) ·
``params``, ``profiles`` (settings) · ``energy``, ``environment``, ``metrics`` · ``schema``,
``stats``, ``results``, ``claims``, ``tables``, ``checks``, ``runs``, ``carryover`` (records
and what they say) · ``windows``, ``plan``, ``kernels``, ``e2e``, ``measure`` (one cell) ·
``pool``, ``sweep``, ``train``, ``finetune``, ``worker`` (running many) · ``lesson``,
``plots``, ``figures``, ``floor``, ``report``, ``runner``, ``cli``, ``folders`` (what a reader
sees, and the runs).
"""

import sys

__version__ = "0.1.0"

# Errors a user causes (a profile that needs a GPU, a missing folder, damaged data) show in a
# notebook as one line that says what to do, not as a traceback through effbert.
USER_ERRORS = {"ProfileError", "DataError", "ModelError", "FolderRefused", "StoreError"}


def _one_line_errors() -> None:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return

    def show(shell, etype, evalue, tb, tb_offset=None):
        if etype.__name__ in USER_ERRORS:
            print(f"{etype.__name__}: {evalue}", file=sys.stderr)
            return []
        return shell.showtraceback((etype, evalue, tb), tb_offset=tb_offset)

    shell.set_custom_exc((Exception,), show)


_one_line_errors()
