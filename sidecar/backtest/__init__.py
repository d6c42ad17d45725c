"""Policy backtest (issue 16): replay an exported hook-event history under a baseline and a
candidate policy on a virtual clock, with an outage model of when dependencies were down.

Pure: `history.parse` takes lines, not a file; the command line (`cli.py`) reads the file.
"""

from .history import History, HistoryError, parse
from .metrics import METRICS, TaskResult, summarize
from .model import Model, Observer, OutageModel
from .report import report, table
from .simulate import Simulation, simulate

__all__ = [
    "METRICS",
    "History",
    "HistoryError",
    "Model",
    "Observer",
    "OutageModel",
    "Simulation",
    "TaskResult",
    "parse",
    "report",
    "simulate",
    "summarize",
    "table",
]
