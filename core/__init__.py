"""Graftlab core: everything that is not Qt (model sources, module tree, adapter plans, data,
training, export, run.yaml, CLI). Never imports PySide6, pyqtgraph or `app`."""

__version__ = "0.1.0"
