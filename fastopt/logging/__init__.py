"""Runtime logging state shared by the runner, hooks and optimizer wrappers."""

from fastopt.logging.history_buffer import HistoryBuffer
from fastopt.logging.manager import ManagerMixin
from fastopt.logging.message_hub import MessageHub
from fastopt.logging.print_log import print_log

__all__ = ["HistoryBuffer", "ManagerMixin", "MessageHub", "print_log"]
