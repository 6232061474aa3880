"""Tables that change in place: each update touches only the cells whose text changed, so
a live view does not flicker and keeps its cursor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text


class LiveTable(DataTable[Cell]):
    """A DataTable of fixed columns (``(key, label, width)``) shown by ``show(rows)``."""

    DEFAULT_CSS = """
    LiveTable { height: auto; max-height: 12; }
    """

    def __init__(self, columns: Sequence[tuple[str, str, int]], *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", id=id)
        self._columns = columns

    def on_mount(self) -> None:
        for key, label, width in self._columns:
            self.add_column(label, width=width, key=key)

    def add_live_column(self, key: str, label: str, width: int) -> None:
        """A column more, last (its cells in rows already shown stay empty until shown)."""
        self._columns = [*self._columns, (key, label, width)]
        self.add_column(label, width=width, key=key, default=Text(""))

    def show(self, rows: Mapping[str, Sequence[Cell]]) -> None:
        """Show ``rows`` (row key -> cells in column order), in their order."""
        present = [str(key.value) for key in self.rows]
        kept = [key for key in present if key in rows]
        new = [key for key in rows if key not in kept]
        if kept + new != list(rows):
            self.clear()  # a row goes between others (rare): rebuilt once
            present, kept = [], []
        for key in present:
            if key not in rows:
                self.remove_row(key)
        columns = [key for key, _, _ in self._columns]
        for key, given in rows.items():
            # Text, not markup: a name or reason from the daemon is shown as it is.
            cells = [Text(cell) if isinstance(cell, str) else cell for cell in given]
            if key in kept:
                for column, cell in zip(columns, cells, strict=True):
                    if self.get_cell(key, column) != cell:
                        self.update_cell(key, column, cell)
            else:
                self.add_row(*cells, key=key)

    def highlighted_key(self) -> str | None:
        if not self.row_count:
            return None
        key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return key.value
