import os
from pathlib import Path

# Generated datasets and caches go to a repo-local folder that survives between runs.
os.environ.setdefault("EDGEVID_HOME", str(Path(__file__).resolve().parent.parent / ".cache" / "edgevid-home"))
