"""Everything about access tokens and nothing about quotes: records, issuance, storage."""

from .file import FileTokenStorage
from .record import TokenRecord
from .storage import TokenStorage

__all__ = ["FileTokenStorage", "TokenRecord", "TokenStorage"]
