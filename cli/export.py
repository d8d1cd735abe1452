"""`ouro export`: Gaussians to PLY, to a vertex-coloured mesh, or to a UV-textured mesh."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import Progress

from ouro.pipelines.choices import EXPORT_FORMATS

from ._common import checked_output, choice_enum, err_console, fail

ExportFormat = choice_enum("ExportFormat", EXPORT_FORMATS)


def _resolve_output(gaussians: Path, output: Path, format: Optional[ExportFormat]) -> tuple[Path, str]:
    """The output file and format: ``--format``, else OUT's suffix; a folder gets <input stem>.<format>."""
    suffix = output.suffix.lower().lstrip(".")
    if output.is_dir() or not suffix:
        fmt = format.value if format else "glb"
        return output / f"{gaussians.stem}.{fmt}", fmt
    if suffix not in ExportFormat.__members__:
        fail(f"{output}: unknown output suffix .{suffix}; use .ply, .glb or .obj (or --format with a folder)")
    if format is not None and format.value != suffix:
        fail(f"{output}: the suffix .{suffix} disagrees with --format {format.value}; drop one of them")
    return output, suffix


def export(
    gaussians: Annotated[Path, typer.Argument(help="A 3DGS PLY file (e.g. out/gaussians.ply).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (.ply, .glb or .obj) or folder (a path without a suffix; created if missing).", show_default=False)],
    format: Annotated[Optional[ExportFormat], typer.Option("--format", help="`ply`: the splats, pruned of near-transparent Gaussians; `glb`/`obj`: a mesh fused from rendered depth and colour (vertex colours, or a texture with --texture). Default: OUT's suffix, else glb.")] = None,
    texture: Annotated[Optional[int], typer.Option("--texture", help="Bake a TEXTURE x TEXTURE colour texture (a power of two, 64-8192) onto a UV-unwrapped mesh instead of vertex colours: a GLB with it embedded, or OBJ + <stem>.mtl + <stem>.png. CPU only.", show_default=False)] = None,
    faces: Annotated[Optional[int], typer.Option("--faces", min=100, help="Face budget: drop small pieces, close simple holes and decimate the fused mesh to this many faces. Default: 50,000 with --texture, else the mesh as fused.", show_default=False)] = None,
    resolution: Annotated[int, typer.Option(min=32, help="Size of the views rendered for mesh fusion, pixels.")] = 256,
    voxels: Annotated[int, typer.Option(min=16, help="TSDF voxels per side of the fused cube (mesh detail).")] = 256,
    bake_resolution: Annotated[int, typer.Option(min=32, help="With --texture: size of the splat renders the texture is baked from, pixels.")] = 512,
) -> None:
    """Export splats to a standard 3DGS PLY, or to a vertex-coloured or textured mesh (GLB/OBJ)."""
    from ouro.io.files import check_output_file
    from ouro.pipelines.export import MeshSettings, TextureSettings, export as run_export

    if not gaussians.is_file():
        fail(f"{gaussians}: no such file; give the path of a 3DGS PLY (e.g. out/gaussians.ply)")
    dst, fmt = _resolve_output(gaussians, output, format)
    if fmt == "ply" and (texture is not None or faces is not None):
        fail(f"{dst}: {'--texture' if texture is not None else '--faces'} needs a mesh output; use .glb or .obj")
    settings = MeshSettings(image_size=resolution, voxels=voxels, faces=faces)
    bake = None
    if texture is not None:
        try:
            bake = TextureSettings(size=texture, view_size=bake_resolution, **({"faces": faces} if faces is not None else {}))
        except ValueError as exc:
            fail(str(exc))
    checked_output(check_output_file, dst)  # before the mesh is computed; missing folders are created

    def warn(line: str) -> None:
        err_console.print(f"[yellow]ouro: warning:[/] {escape(line)}", soft_wrap=True, highlight=False)

    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("rendering and baking views" if bake else "rendering views", total=None)
            written = run_export(gaussians, dst, fmt, settings, progress=lambda done, total: bar.update(task, completed=done, total=total),
                                 log=warn, texture=bake)
    except ValueError as exc:
        fail(str(exc))
    side = " (with its .mtl and .png beside it)" if bake and fmt == "obj" else ""
    typer.echo(f"wrote {written}{side}")
