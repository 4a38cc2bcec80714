"""sqlite_utils, imported without pandas.

sqlite_utils imports pandas whenever it is installed, only to map pandas' types to column types;
taskhub never writes any. Where pandas is installed (beside FATE's client, say) that import cost
1.7 s of every server start on an idle machine, over 5 s on a loaded one. Pandas stays importable
afterwards for whatever else wants it.
"""
import sys

_hidden = "pandas" not in sys.modules
if _hidden:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises ImportError
try:
    import sqlite_utils  # noqa: E402
finally:
    if _hidden:
        del sys.modules["pandas"]

__all__ = ["sqlite_utils"]
