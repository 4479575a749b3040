"""Mesh export: OBJ (with vertex colours, UVs and a texture PNG), binary PLY and GLB, written
atomically; :data:`WRITERS` is the format registry."""

from tddfa.export.formats import (
    FRAMES,
    WRITERS,
    MeshData,
    export_mesh,
    sample_vertex_colors,
    save_exports,
    to_frame,
)

__all__ = ["FRAMES", "WRITERS", "MeshData", "export_mesh", "sample_vertex_colors", "save_exports", "to_frame"]
