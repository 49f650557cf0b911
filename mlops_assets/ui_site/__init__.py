"""The start-up hook `mlops ui` puts first on its servers' PYTHONPATH (``sitecustomize.py``)."""

from pathlib import Path

SITE_DIR = Path(__file__).resolve().parent
