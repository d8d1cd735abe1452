# ouro render worker: one 3D object -> RGBA orbit frames (and optional depth), inside Blender.
#
# Runs in Blender's Python: the PyPI ``bpy`` wheel through ``ouro/data/bproc_launcher.py`` (default),
# or a real Blender 4.2 through ``blenderproc run --custom-blender-path`` (``ouro render --blender``).
# It imports nothing from ouro (a real Blender cannot see the ouro venv's torch): the parent
# (``ouro.pipelines.render``) computes the cameras with ``ouro.geometry`` and passes them in a job
# file, and turns the raw outputs into the render folder's final files and meta.json.
#
# Usage (argv after BlenderProc's own handling): ``blender_worker.py JOB.json``
#
# JOB.json keys:
#   source (str)            mesh file: .glb / .gltf / .obj (case-insensitive)
#   texture_dirs (list)     extra folders searched for textures the mesh file names but that are not
#                           where it says (GSO: model.mtl names texture.png, which is in
#                           ../materials/textures/)
#   frames_dir (str)        where the RGBA PNGs go, at ``frames_dir/<frame_names[i]>``
#   frame_names (list)      one relative path per camera, e.g. "000/007.png"
#   work_dir (str)          scratch folder (BlenderProc outputs, depth .npy, result.json)
#   cameras (list)          one 4x4 camera-to-world per frame: Blender ``matrix_world`` (Blender world
#                           +z up, OpenGL camera axes: +x right, +y up, looking along -z), in the
#                           frame of the *normalised* object
#   fov_deg (float)         horizontal (= vertical, square images) field of view, degrees
#   resolution (int)        image width = height, pixels
#   engine (str)            "cycles" (CPU path tracing, no denoiser) or "workbench"
#   samples (int)           Cycles samples per pixel
#   threads (int)           render threads, 0 = all cores
#   depth (bool)            also write z-depth per frame: work_dir/depth_<i:04d>.npy, float32 [H, W],
#                           object units along the camera axis; background pixels hold Blender's far
#                           value (the parent masks them with alpha)
#   normalize (str)         "diagonal": bounding-box diagonal = 1; "extent": longest side = 1;
#                           both centre the bounding box at the origin
#
# Writes work_dir/result.json: {"ok": true, ...statistics...} or {"ok": false, "error": "..."}, and
# exits 0 on success, 1 on failure (``os._exit``: bpy 4.2 may crash at interpreter exit).
import blenderproc as bproc  # noqa: I001  (BlenderProc insists on being the first import)

import json
import math
import os
import shutil
import sys
import time
import traceback

import bpy
import numpy as np
from mathutils import Matrix

MESH_SUFFIXES = {".glb": "gltf", ".gltf": "gltf", ".obj": "obj"}


def init_blenderproc() -> None:
    """``bproc.init()``, tolerating the bpy wheel's missing translations (``en_US`` enum error)."""
    try:
        bproc.init()
    except TypeError as e:
        if "en_US" not in str(e):
            raise
        from blenderproc.python.renderer import RendererUtility
        from blenderproc.python.utility.GlobalStorage import GlobalStorage
        from blenderproc.python.utility.Initializer import _Initializer

        bpy.context.scene.render.engine = "CYCLES"
        RendererUtility.set_render_devices()
        _Initializer.set_default_parameters()
        GlobalStorage.add("bproc_init_complete", True)


def import_mesh(path: str, up_axis: str = "y") -> None:
    """Import a mesh file into the (empty) scene with Blender's own importers.

    glTF is +y up by specification; OBJ files are +y up unless ``up_axis == "z"`` (Google Scanned
    Objects, Gazebo's convention), which Blender's own +z-up world then takes as it is.
    """
    kind = MESH_SUFFIXES.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(f"unsupported mesh format {os.path.splitext(path)[1]!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    if kind == "gltf":
        result = bpy.ops.import_scene.gltf(filepath=path)
    else:
        axes = {"forward_axis": "Y", "up_axis": "Z"} if up_axis == "z" else {}
        result = bpy.ops.wm.obj_import(filepath=path, validate_meshes=True, **axes)
    if "FINISHED" not in result:
        raise RuntimeError(f"Blender could not import {os.path.basename(path)}: {sorted(result)}")


def relink_textures(texture_dirs: list[str]) -> tuple[int, int]:
    """Point images whose file is missing at a same-named file in ``texture_dirs``.

    Returns ``(loaded, missing)``: images with pixels, and images that still have none.
    """
    loaded = missing = 0
    for image in list(bpy.data.images):
        if image.source != "FILE":
            continue
        if image.packed_file is None and not os.path.isfile(bpy.path.abspath(image.filepath)):
            name = os.path.basename(image.filepath.replace("\\", "/")).lower()
            for folder in texture_dirs:
                found = [f for f in sorted(os.listdir(folder)) if f.lower() == name] if os.path.isdir(folder) else []
                if found:
                    # a placeholder for a missing file cannot be reloaded in place: load and remap
                    replacement = bpy.data.images.load(os.path.join(folder, found[0]), check_existing=True)
                    image.user_remap(replacement)
                    bpy.data.images.remove(image)
                    image = replacement
                    break
        if image.size[0] > 0 and image.size[1] > 0:
            loaded += 1
        else:
            missing += 1
    return loaded, missing


def mesh_objects() -> list:
    return [o for o in bpy.context.scene.objects if o.type == "MESH"]


def remove_cameras_and_lights() -> None:
    """Drop cameras and lights that came with the file: lighting and cameras are ours."""
    scene_camera = bpy.context.scene.camera
    for obj in list(bpy.context.scene.objects):
        if obj.type in {"CAMERA", "LIGHT"} and obj is not scene_camera:
            bpy.data.objects.remove(obj, do_unlink=True)


def clear_animation() -> bool:
    """Remove all animation data (camera keyframes would otherwise animate the object); True if any."""
    animated = len(bpy.data.actions) > 0
    for obj in bpy.data.objects:
        if obj is bpy.context.scene.camera:
            continue
        if obj.animation_data is not None:
            animated = True
            obj.animation_data_clear()
    for key in bpy.data.shape_keys:
        if key.animation_data is not None:
            animated = True
            key.animation_data_clear()
    for action in list(bpy.data.actions):
        bpy.data.actions.remove(action)
    bpy.context.scene.frame_set(0)
    return animated


def world_vertices() -> np.ndarray:
    """All evaluated mesh vertices in world coordinates, [N, 3] (Blender world, +z up)."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    chunks = []
    for obj in mesh_objects():
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        m = np.array(obj.matrix_world, dtype=np.float64)
        chunks.append(co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3])
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise RuntimeError("the file has no mesh vertices")
    return np.concatenate(chunks)


def normalize_scene(mode: str) -> dict:
    """Scale and move the root objects so the bounding box is centred at the origin with unit size.

    ``x_new = scale * (x - centre)`` in Blender world coordinates.
    """
    points = world_vertices()
    lo, hi = points.min(0), points.max(0)
    size = hi - lo
    length = float(np.linalg.norm(size)) if mode == "diagonal" else float(size.max())
    if not math.isfinite(length) or length <= 1e-12:
        raise RuntimeError(f"degenerate bounding box {lo.tolist()}..{hi.tolist()}")
    scale = 1.0 / length
    centre = (lo + hi) / 2
    transform = Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(tuple(-centre))
    for obj in bpy.context.scene.objects:
        if obj.parent is None and obj is not bpy.context.scene.camera:
            obj.matrix_world = transform @ obj.matrix_world
    bpy.context.view_layer.update()
    after = world_vertices()
    return {
        "bbox_min_blender": lo.tolist(),
        "bbox_max_blender": hi.tolist(),
        "scale": scale,
        "normalized_bbox_min_blender": after.min(0).tolist(),
        "normalized_bbox_max_blender": after.max(0).tolist(),
    }


def _principled(material):
    if not material.use_nodes or material.node_tree is None:
        return None
    for node in material.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            return node
    return None


def _uses_node(material, types: set) -> bool:
    return material.node_tree is not None and any(n.type in types for n in material.node_tree.nodes)


def prepare_materials() -> dict:
    """Keep vertex colours visible, copy base colours to the viewport colour, count appearance.

    * A mesh with a colour attribute whose materials ignore it (glTF COLOR_0 without a material, as
      trimesh writes it, imports as plain white) gets its attribute wired into Base Color.
    * ``material.diffuse_color`` (what Workbench shows) is set to the Principled Base Color.

    Returns counts used by ``ouro filter``: image textures, missing textures, whether vertex colours
    vary, and the number of distinct untextured base colours.
    """
    vertex_colors = False
    base_colors = set()
    for obj in mesh_objects():
        mesh = obj.data
        attr = mesh.color_attributes.active_color or (mesh.color_attributes[0] if len(mesh.color_attributes) else None)
        varies = False
        if attr is not None and len(attr.data) > 0:
            values = np.empty(len(attr.data) * 4, dtype=np.float32)
            attr.data.foreach_get("color", values)
            rgb = values.reshape(-1, 4)[:, :3]
            varies = bool(rgb.std(0).max() > 1e-3) or bool(np.abs(rgb - 1.0).max() > 1e-3)
        if varies:
            vertex_colors = True
            if len(mesh.materials) == 0 or all(m is None for m in mesh.materials):
                material = bpy.data.materials.new(f"{obj.name}_vertex_color")
                material.use_nodes = True
                if len(mesh.materials) == 0:
                    mesh.materials.append(material)
                else:
                    for i in range(len(mesh.materials)):
                        mesh.materials[i] = material
            for material in mesh.materials:
                if material is None:
                    continue
                node = _principled(material)
                if node is None or _uses_node(material, {"ATTRIBUTE", "VERTEX_COLOR"}):
                    continue
                base = node.inputs["Base Color"]
                if base.is_linked:
                    continue
                attr_node = material.node_tree.nodes.new("ShaderNodeAttribute")
                attr_node.attribute_type = "GEOMETRY"
                attr_node.attribute_name = attr.name
                material.node_tree.links.new(attr_node.outputs["Color"], base)
        for material in mesh.materials:
            if material is None:
                base_colors.add((0.8, 0.8, 0.8))
                continue
            node = _principled(material)
            if node is None:
                base_colors.add(tuple(round(c * 50) / 50 for c in material.diffuse_color[:3]))
                continue
            base = node.inputs["Base Color"]
            if not base.is_linked:
                color = tuple(base.default_value)
                material.diffuse_color = color
                base_colors.add(tuple(round(c * 50) / 50 for c in color[:3]))
        if len(mesh.materials) == 0:
            base_colors.add((0.8, 0.8, 0.8))
    return {"vertex_colors": vertex_colors, "base_colors": len(base_colors)}


def setup_lighting_and_engine(job: dict, appearance: dict) -> dict:
    """Engine settings; returns a description for meta.json."""
    scene = bpy.context.scene
    bproc.renderer.set_output_format(file_format="PNG", color_depth=8, enable_transparency=True,
                                     view_transform="Standard")
    bproc.renderer.set_cpu_threads(int(job.get("threads", 0)))
    # bproc.init() adds Intel's denoiser as a compositor node; it would also run after Workbench
    # (and doubles Cycles' time at 512 px). Without depth output nothing needs the compositor.
    bproc.renderer.set_denoiser(None)
    scene.render.use_compositing = bool(job.get("depth"))
    if job["engine"] == "cycles":
        bproc.renderer.set_world_background([1.0, 1.0, 1.0], strength=1.0)
        bproc.renderer.set_max_amount_of_samples(int(job["samples"]))
        bproc.renderer.set_noise_threshold(0.01)
        return {"engine": "cycles", "device": "CPU", "samples": int(job["samples"]), "denoiser": None,
                "noise_threshold": 0.01, "lighting": "uniform white world, strength 1",
                "view_transform": "Standard"}
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light = "STUDIO"
    use_vertex = appearance["vertex_colors"] and appearance["image_textures"] == 0
    shading.color_type = "VERTEX" if use_vertex else "TEXTURE"
    return {"engine": "workbench", "samples": None, "denoiser": None,
            "lighting": "workbench studio light", "color_type": shading.color_type,
            "view_transform": "Standard"}


def render(job: dict, result: dict) -> None:
    init_blenderproc()
    t0 = time.time()
    import_mesh(job["source"], job.get("up_axis", "y"))
    remove_cameras_and_lights()
    objects = mesh_objects()
    if not objects:
        raise RuntimeError("the file contains no mesh objects")
    result["faces"] = int(sum(len(o.data.polygons) for o in objects))
    result["vertices"] = int(sum(len(o.data.vertices) for o in objects))
    result["mesh_objects"] = len(objects)
    result["animated"] = clear_animation()
    loaded, missing = relink_textures(job.get("texture_dirs", []))
    appearance = prepare_materials()
    appearance.update(image_textures=loaded, missing_textures=missing)
    result["appearance"] = appearance
    result.update(normalize_scene(job.get("normalize", "diagonal")))
    result["import_seconds"] = time.time() - t0

    result["render"] = setup_lighting_and_engine(job, appearance)
    res = int(job["resolution"])
    bproc.camera.set_intrinsics_from_blender_params(lens=math.radians(float(job["fov_deg"])), image_width=res,
                                                    image_height=res, lens_unit="FOV")
    for c2w in job["cameras"]:
        bproc.camera.add_camera_pose(np.array(c2w, dtype=np.float64))
    if job.get("depth"):
        bproc.renderer.enable_depth_output(activate_antialiasing=False)

    out_dir = os.path.join(job["work_dir"], "bproc")
    os.makedirs(out_dir, exist_ok=True)
    t1 = time.time()
    data = bproc.renderer.render(output_dir=out_dir, file_prefix="rgb_", output_key=None,
                                 load_keys={"depth"} if job.get("depth") else None,
                                 return_data=bool(job.get("depth")))
    result["render_seconds"] = time.time() - t1

    for i, name in enumerate(job["frame_names"]):
        src = os.path.join(out_dir, f"rgb_{i:04d}.png")
        dst = os.path.join(job["frames_dir"], name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(src, dst)
    if job.get("depth"):
        depths = data["depth"]
        if len(depths) != len(job["frame_names"]):
            raise RuntimeError(f"expected {len(job['frame_names'])} depth maps, got {len(depths)}")
        for i, depth in enumerate(depths):
            np.save(os.path.join(job["work_dir"], f"depth_{i:04d}.npy"), np.asarray(depth, dtype=np.float32))
    shutil.rmtree(out_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    job_path = argv[-1]
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    result: dict = {"ok": False}
    code = 1
    try:
        import blenderproc.version

        result["blender_version"] = bpy.app.version_string
        result["blenderproc_version"] = blenderproc.version.__version__
        render(job, result)
        result["ok"] = True
        code = 0
    except BaseException as e:  # noqa: BLE001  (every failure becomes a one-line reason)
        traceback.print_exc()
        message = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        result["error"] = f"{type(e).__name__}: {message}" if message else type(e).__name__
    tmp = os.path.join(job["work_dir"], "result.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(job["work_dir"], "result.json"))
    shutil.rmtree(bpy.app.tempdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    exit_code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
