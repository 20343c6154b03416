"""Test helpers shared by every test folder (``cli_errors``) are imported from here, whatever the import mode."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
