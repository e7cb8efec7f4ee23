"""Facts about the AutoVI release itself: its six category names, their image sizes and
defect folders. The download checks a fetched copy against them and the synthetic
generator imitates them; reading data never needs them (any category name is read, its
size is its first training image's)."""

from __future__ import annotations

#: The six AutoVI categories, in the release's order.
CATEGORIES: tuple[str, ...] = (
    "engine_wiring",
    "pipe_clip",
    "pipe_staple",
    "tank_screw",
    "underbody_pipes",
    "underbody_screw",
)

#: Image size (width, height) of each AutoVI category in the release.
NATIVE_SIZES: dict[str, tuple[int, int]] = {
    "engine_wiring": (400, 400),
    "pipe_clip": (400, 400),
    "pipe_staple": (400, 400),
    "tank_screw": (1000, 750),
    "underbody_pipes": (1000, 750),
    "underbody_screw": (1000, 750),
}

#: The defect folders under test/ of each category in the AutoVI release.
DEFECT_FOLDERS: dict[str, tuple[str, ...]] = {
    "engine_wiring": ("fastening", "multiple", "blue_hoop", "cardboard", "obstruction"),
    "pipe_clip": ("unclipped", "operator"),
    "pipe_staple": ("missing",),
    "tank_screw": ("missing",),
    "underbody_pipes": ("obstruction", "operator", "multiple"),
    "underbody_screw": ("missing",),
}
