"""The worker runtime: supervisor, warm executor processes and attempt execution."""

if __name__ != "flowkit.workers":
    raise ImportError("the workers folder installs as flowkit.workers; `pip install -e .` and "
                      "import flowkit.workers instead of `workers`")
