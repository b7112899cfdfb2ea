import logging
import os
from pathlib import Path

# Generated datasets and caches go to a repo-local folder that survives between runs.
os.environ.setdefault("EDGEVID_HOME", str(Path(__file__).resolve().parent.parent / ".cache" / "edgevid-home"))

# torch.export's trace logger emits a DEBUG record per traced op; caught by pytest's logging
# capture they slow every export down many times over. They are not ours to assert on.
logging.getLogger("torch.__trace").propagate = False
