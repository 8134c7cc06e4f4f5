"""Pallas kernels for the block-sparse PHD masks."""
from pallas_kernels.block_tables import (
                                         BlockTables,
                                         block_tables,
                                         row_ranges,
                                         transpose_tables,
                                         visited_blocks,
)
from pallas_kernels.phd_flash import phd_flash_attention

__all__ = ["BlockTables", "block_tables", "phd_flash_attention", "row_ranges", "transpose_tables",
           "visited_blocks"]
