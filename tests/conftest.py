import sys
from pathlib import Path

# tests/mutants.py and the stand-ins are imported by name from the tests.
sys.path.insert(0, str(Path(__file__).parent))
