"""Cleaning a fused mesh: small components dropped, simple holes closed, decimation to a face budget.

Components and quadric decimation are open3d's (``cluster_connected_triangles``,
``simplify_quadric_decimation``, which carries vertex colours along). Holes are closed by our own
fan triangulation: open3d 0.20's ``fill_holes`` (VTK's ``vtkFillHolesFilter``) returned meshes with
inconsistent winding and merged vertices in our checks, so it is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mesh import ColoredMesh, import_open3d

__all__ = ["CleanupReport", "clean_mesh", "close_holes", "vertex_normals"]


@dataclass
class CleanupReport:
    """What :func:`clean_mesh` did (counts of faces and pieces)."""

    faces_in: int
    components_removed: int
    faces_removed: int
    holes_closed: int
    faces_out: int


def clean_mesh(
    mesh: ColoredMesh,
    *,
    faces: int | None = None,
    min_component: float = 0.01,
    max_hole_edges: int = 64,
    max_hole_size: float | None = None,
) -> tuple[ColoredMesh, CleanupReport]:
    """Drop small pieces, close simple holes and decimate.

    Args:
        mesh: a triangle mesh with vertex colours (e.g. from :func:`ouro.io.mesh.tsdf_fuse`).
        faces: face budget; the mesh is decimated (quadric error, colours carried) to at most this
            many faces. None keeps every face.
        min_component: connected pieces with fewer faces than this fraction of the largest piece's
            are removed (TSDF floaters).
        max_hole_edges: boundary loops of at most this many edges are closed ...
        max_hole_size: ... when also no longer than this across (object units); None: no limit.

    Returns:
        The cleaned mesh and a :class:`CleanupReport`.
    """
    o3d = import_open3d()
    faces_in = len(mesh.faces)
    legacy = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)), o3d.utility.Vector3iVector(mesh.faces.astype(np.int32))
    )
    legacy.vertex_colors = o3d.utility.Vector3dVector(mesh.colors.astype(np.float64))
    legacy.remove_duplicated_vertices()
    legacy.remove_degenerate_triangles()
    legacy.remove_duplicated_triangles()

    # 1. small components
    removed_components = removed_faces = 0
    if len(legacy.triangles):
        labels, sizes, _ = legacy.cluster_connected_triangles()
        labels, sizes = np.asarray(labels), np.asarray(sizes)
        small = sizes < min_component * sizes.max()
        removed_components, removed_faces = int(small.sum()), int(sizes[small].sum())
        legacy.remove_triangles_by_mask(small[labels])
        legacy.remove_unreferenced_vertices()

    # 2. simple holes
    vertices = np.asarray(legacy.vertices, dtype=np.float64)
    colors = np.asarray(legacy.vertex_colors, dtype=np.float64)
    tris = np.asarray(legacy.triangles, dtype=np.int64)
    vertices, colors, tris, holes = close_holes(vertices, colors, tris, max_edges=max_hole_edges, max_size=max_hole_size)

    # 3. decimation
    if faces is not None and len(tris) > faces:
        legacy = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(tris.astype(np.int32)))
        legacy.vertex_colors = o3d.utility.Vector3dVector(colors)
        legacy = legacy.simplify_quadric_decimation(target_number_of_triangles=int(faces))
        legacy.remove_degenerate_triangles()
        legacy.remove_unreferenced_vertices()
        vertices = np.asarray(legacy.vertices)
        colors = np.asarray(legacy.vertex_colors)
        tris = np.asarray(legacy.triangles, dtype=np.int64)
    out = ColoredMesh(vertices.astype(np.float32), tris.astype(np.int64), colors.clip(0, 1).astype(np.float32))
    return out, CleanupReport(faces_in, removed_components, removed_faces, holes, len(out.faces))


def close_holes(
    vertices: np.ndarray,  # [M, 3]
    colors: np.ndarray,  # [M, 3]
    faces: np.ndarray,  # [F, 3] int
    *,
    max_edges: int = 64,
    max_size: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Close the simple holes of a consistently wound mesh by fans around their centroids.

    A hole is a loop of boundary edges (edges of one face) through vertices that have one
    outgoing boundary edge each; loops through pinched vertices are left open. Each closed loop
    of ``n > 3`` edges gets one new vertex at its centroid (with the loop's mean colour) and ``n``
    triangles wound like their neighbours; a 3-edge loop gets one triangle.

    Returns:
        ``vertices, colors, faces`` with the new ones appended, and the number of holes closed.
    """
    if len(faces) == 0:
        return vertices, colors, faces, 0
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = len(vertices)
    forward = directed[:, 0] * n + directed[:, 1]
    backward = directed[:, 1] * n + directed[:, 0]
    undirected = np.minimum(forward, backward)
    uniq, count = np.unique(undirected, return_counts=True)
    single = np.isin(undirected, uniq[count == 1])
    boundary = directed[single]  # a -> b as wound in its face; the hole's fill runs b -> a
    if len(boundary) == 0:
        return vertices, colors, faces, 0
    out_degree = np.bincount(boundary[:, 0], minlength=n)
    nxt = np.full(n, -1, dtype=np.int64)
    ok = out_degree[boundary[:, 0]] == 1
    nxt[boundary[ok, 0]] = boundary[ok, 1]
    pinched = set(np.nonzero(out_degree > 1)[0].tolist())

    new_vertices, new_colors, new_faces = [], [], []
    visited = np.zeros(n, dtype=bool)
    closed = 0
    for start in boundary[ok, 0]:
        if visited[start]:
            continue
        loop, v = [], int(start)
        while v >= 0 and not visited[v] and v not in pinched and len(loop) <= max_edges:
            visited[v] = True
            loop.append(v)
            v = int(nxt[v])
        if v != start or len(loop) < 3 or len(loop) > max_edges:
            continue  # open chain, pinched, or too long
        ring = vertices[loop]
        if max_size is not None and np.linalg.norm(ring[:, None] - ring[None], axis=-1).max() > max_size:
            continue
        closed += 1
        if len(loop) == 3:
            new_faces.append([loop[2], loop[1], loop[0]])
            continue
        centre = n + len(new_vertices)
        new_vertices.append(ring.mean(axis=0))
        new_colors.append(colors[loop].mean(axis=0))
        for a, b in zip(loop, loop[1:] + loop[:1]):
            new_faces.append([b, a, centre])
    if closed == 0:
        return vertices, colors, faces, 0
    vertices = np.concatenate([vertices, np.asarray(new_vertices).reshape(-1, 3)])
    colors = np.concatenate([colors, np.asarray(new_colors).reshape(-1, 3)])
    faces = np.concatenate([faces, np.asarray(new_faces, dtype=np.int64)])
    return vertices, colors, faces, closed


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:  # [M, 3], [F, 3] -> [M, 3] unit
    """Area-weighted vertex normals of a counter-clockwise mesh (outward for a closed surface)."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)
