"""d4rt.occupancy: per-frame 4D occupancy grids from the runtime's point maps. numpy only, no torch.

    >>> from d4rt.occupancy.grid import occupancy_from_scene
    >>> occ = occupancy_from_scene(rt, scene, voxel_size=0.05)
"""
