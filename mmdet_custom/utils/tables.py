"""Plain-text tables for command-line output (terminaltables, the table library mmdet itself uses)."""
from typing import Optional, Sequence

from terminaltables import AsciiTable

__all__ = ['plain_table']


def plain_table(rows: Sequence[Sequence[object]], heading_rule: bool = True,
                right_columns: Optional[Sequence[int]] = None) -> str:
    """Borderless columns two spaces apart, a dashed rule under the header row; trailing spaces removed.

    Args:
        rows (Sequence[Sequence]): the header row first, then the body; cells are converted with ``str``.
        heading_rule (bool): draw the dashed rule under the header. Defaults to True.
        right_columns (Sequence[int], optional): indices of right-aligned (numeric) columns; others align left.

    Example:
        >>> print(plain_table([['name', 'n'], ['ship', 12], ['plane', 3]], right_columns=[1]))
        name    n
        ---------
        ship   12
        plane   3
    """
    table = AsciiTable([[str(cell) for cell in row] for row in rows])
    table.outer_border = table.inner_column_border = False
    table.inner_heading_row_border = heading_rule
    table.padding_left, table.padding_right = 0, 2
    table.justify_columns = {i: 'right' for i in right_columns or ()}
    lines = [line.rstrip() for line in table.table.splitlines()]
    if heading_rule:  # the rule spans the text, not the last column's padding
        lines[1] = '-' * max(len(line) for i, line in enumerate(lines) if i != 1)
    return '\n'.join(lines)
