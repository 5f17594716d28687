"""The icon renderer's pure functions on tiny synthetic inputs, and one build end to end.

The end-to-end build uses a synthetic theme folder of PNG files, so it needs neither the
Debian icon themes nor ``rsvg-convert``.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.datasets.icons.build import build_dataset, discover, write_dataset
from scripts.datasets.icons.concepts import (
    ConceptRules,
    IconRef,
    build_concepts,
    drop_fallbacks,
    is_standard,
    usable_name,
)
from scripts.datasets.icons.dedup import hamming, keep_distinct, phash
from scripts.datasets.icons.packages import (
    PackageInfo,
    ThemesMissingError,
    installed_versions,
    license_names,
    parse_index_sha256,
)
from scripts.datasets.icons.raster import (
    BACKGROUND,
    RenderParams,
    is_filled_square,
    on_grey,
    rasterise,
    rejection,
    visible_fraction,
)
from scripts.datasets.icons.select import (
    Candidate,
    Rendered,
    SelectRules,
    assign_splits,
    select_designs,
    shared_drawings,
)
from scripts.datasets.icons.themes import (
    THEMES,
    IconDir,
    Theme,
    apt_install_command,
    choose_files,
    parse_index,
)

RULES = ConceptRules(max_aliases=3, min_alias_themes=2, alias_share=0.5, stand_in_share=1.0)


def _ref(digest: str, drawn_as: str) -> IconRef:
    return IconRef(digest, drawn_as)


def _pattern(seed: int, side: int = 32) -> np.ndarray:
    """A random blocky RGB image (3, side, side): far from any other seed's in phash."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
    return np.kron(blocks, np.ones((side // 8, side // 8), dtype=np.uint8))


def _rendered(image: np.ndarray) -> Rendered:
    return Rendered(image, phash(image), None)


# ------------------------------------------------------------------ concepts


def test_names_that_never_stand_for_a_concept() -> None:
    assert not usable_name("printer-symbolic")
    assert not usable_name("go-next-rtl")
    assert not usable_name("image-missing")
    assert usable_name("printer") and usable_name("gtk-print")
    assert is_standard("application-vnd.ms-excel") and is_standard("audio-x-flac+ogg")
    assert not is_standard("gtk-print") and not is_standard("stock_print")
    assert not is_standard("org.gnome.Nautilus") and not is_standard("AdobeReader")


def test_fallback_files_are_dropped_but_legacy_names_do_not_count() -> None:
    files = {
        # one archive drawing for three standard names: a fallback (max_aliases=2)
        "application-zip": _ref("z", "package-x-generic"),
        "application-x-rar": _ref("z", "package-x-generic"),
        "application-x-7z": _ref("z", "package-x-generic"),
        # two standard names and three legacy ones: aliases, kept
        "media-floppy": _ref("f", "media-floppy"),
        "system-floppy": _ref("f", "media-floppy"),
        "gtk-floppy": _ref("f", "media-floppy"),
        "gnome-dev-floppy": _ref("f", "media-floppy"),
        "stock_floppy": _ref("f", "media-floppy"),
        "printer-symbolic": _ref("p", "printer-symbolic"),
    }
    kept, fallbacks = drop_fallbacks(files, max_aliases=2)
    assert set(kept) == {"media-floppy", "system-floppy", "gtk-floppy", "gnome-dev-floppy",
                         "stock_floppy"}  # fmt: skip
    assert fallbacks == {"z": ["application-x-7z", "application-x-rar", "application-zip"]}


def test_aliases_merge_when_themes_agree() -> None:
    themes = {
        "A": {n: _ref("a", "media-optical") for n in ("media-optical", "drive-optical",
                                                        "gtk-cdrom", "cdrom")},
        "B": {n: _ref("b", "media-optical") for n in ("media-optical", "drive-optical",
                                                        "gtk-cdrom", "cdrom")},
        "C": {"media-optical": _ref("c1", "media-optical"), "cdrom": _ref("c2", "cdrom")},
        "D": {"drive-optical": _ref("d", "drive-optical")},
        "E": {"media-optical": _ref("e", "media-optical")},
        "F": {"gtk-cdrom": _ref("f", "gtk-cdrom")},
        "G": {"cdrom": _ref("g", "cdrom")},
        "H": {"media-optical": _ref("h", "media-optical")},
    }  # fmt: skip
    concepts, _ = build_concepts(themes, RULES)
    assert [c.name for c in concepts] == ["media-optical"]
    (optical,) = concepts
    assert optical.aliases == ("cdrom", "drive-optical", "gtk-cdrom", "media-optical")
    # Without the head, an alias stands in only if no theme draws the two apart: C draws
    # cdrom apart from media-optical, so G's cdrom is not taken as a media-optical design.
    assert optical.designs == {
        "A": "media-optical", "B": "media-optical", "C": "media-optical", "D": "drive-optical",
        "E": "media-optical", "F": "gtk-cdrom", "H": "media-optical",
    }  # fmt: skip


def test_one_themes_shortcut_does_not_merge_concepts() -> None:
    # Only theme A draws zoom-fit-best as zoom-in; B and C draw them apart.
    themes = {
        "A": {"zoom-in": _ref("a", "zoom-in"), "zoom-fit-best": _ref("a", "zoom-in")},
        "B": {"zoom-in": _ref("b1", "zoom-in"), "zoom-fit-best": _ref("b2", "zoom-fit-best")},
        "C": {"zoom-in": _ref("c1", "zoom-in"), "zoom-fit-best": _ref("c2", "zoom-fit-best")},
    }
    concepts, dropped = build_concepts(themes, RULES)
    by_name = {c.name: c for c in concepts}
    assert set(by_name) == {"zoom-in", "zoom-fit-best"}
    # A's shared file was drawn as zoom-in (the symlink target): it goes to zoom-in only
    assert by_name["zoom-in"].designs == {"A": "zoom-in", "B": "zoom-in", "C": "zoom-in"}
    assert by_name["zoom-fit-best"].designs == {"B": "zoom-fit-best", "C": "zoom-fit-best"}
    assert {"theme": "A", "name": "zoom-fit-best", "reason": "drawn as zoom-in"} in dropped


def test_chains_of_aliases_do_not_merge_unrelated_concepts() -> None:
    # a ~ b in A and B, b ~ c in C and D, but a and c are never one file.
    themes = {
        "A": {"go-up": _ref("1", "go-up"), "go-top": _ref("1", "go-up"),
              "go-bottom": _ref("2", "go-bottom")},
        "B": {"go-up": _ref("3", "go-up"), "go-top": _ref("3", "go-up"),
              "go-bottom": _ref("4", "go-bottom")},
        "C": {"go-top": _ref("5", "go-top"), "go-bottom": _ref("5", "go-top"),
              "go-up": _ref("6", "go-up")},
        "D": {"go-top": _ref("7", "go-top"), "go-bottom": _ref("7", "go-top"),
              "go-up": _ref("8", "go-up")},
    }  # fmt: skip
    concepts, _ = build_concepts(themes, RULES)
    assert len(concepts) == 2  # not one concept of all three names


def test_shared_file_without_an_owner_is_dropped_from_every_concept() -> None:
    themes = {
        t: {
            "edit-delete": _ref(f"{t}1", "edit-delete"),
            "list-remove": _ref(f"{t}2", "list-remove"),
        }
        for t in ("A", "B", "C")
    }
    themes["D"] = {"edit-delete": _ref("d", "minus"), "list-remove": _ref("d", "minus")}
    concepts, dropped = build_concepts(themes, RULES)
    assert all("D" not in c.designs for c in concepts)
    assert {d["reason"] for d in dropped if d["theme"] == "D"} == {"drawn as no concept"}


# ------------------------------------------------------------------ dedup and selection


def test_phash_is_stable_under_small_changes_and_far_between_designs() -> None:
    image = _pattern(1)
    tweaked = image.copy()
    tweaked[:, 0, 0] ^= 0xFF
    assert hamming(phash(image), phash(tweaked)) <= 4
    assert hamming(phash(image), phash(_pattern(2))) > 16
    bigger = np.kron(image, np.ones((2, 2), dtype=np.uint8))  # the same picture at 64 px
    assert hamming(phash(image), phash(bigger)) <= 2
    assert keep_distinct([phash(image), phash(tweaked), phash(_pattern(2))], 6) == [0, 2]


def test_select_designs_drops_copies_and_near_duplicates() -> None:
    base = _pattern(10)
    edited = base.copy()
    edited[:, :8, :4] = 255 - edited[:, :8, :4]  # a derived theme's small edit
    distance = hamming(phash(base), phash(edited))
    assert 0 < distance <= 8  # precondition of what follows
    rules = SelectRules(max_distance=distance - 1, family_distance=8)
    candidates = [
        Candidate("Faenza", "faenza", _rendered(base)),
        Candidate("Other", "other", _rendered(base.copy())),  # exact copy
        Candidate("Obsidian", "faenza", _rendered(edited)),  # near duplicate within the family
        Candidate("Third", "third", _rendered(_pattern(11))),
    ]
    kept, dropped = select_designs(candidates, rules)
    assert kept == ["Faenza", "Third"]
    assert dropped == [
        {"theme": "Other", "reason": "same pixels as Faenza"},
        {"theme": "Obsidian", "reason": "near duplicate of Faenza"},
    ]
    # The same edit by an unrelated theme is farther than max_distance: a design of its own.
    unrelated = [Candidate("Faenza", "faenza", _rendered(base)),
                 Candidate("Else", "else", _rendered(edited))]  # fmt: skip
    assert select_designs(unrelated, rules) == (["Faenza", "Else"], [])


def test_shared_drawings_within_a_theme() -> None:
    box = _pattern(20)
    almost = box.copy()
    almost[:, :2, :2] = 0  # a tiny label change: mean difference well under 0.5
    images = {
        "yasis": {"application-zip": box, "application-x-rar": almost, "folder": _pattern(21)},
        "Tango": {"application-zip": box, "folder": _pattern(22)},
    }
    shared = shared_drawings(images, max_mad=0.5)
    assert shared == {
        ("yasis", "application-zip"): "application-x-rar",
        ("yasis", "application-x-rar"): "application-zip",
    }


def test_assign_splits_is_deterministic_and_near_the_fractions() -> None:
    names = [f"concept-{i:03d}" for i in range(250)]
    split = assign_splits(names, (0.64, 0.16, 0.20), seed=3)
    assert split == assign_splits(list(reversed(names)), (0.64, 0.16, 0.20), seed=3)
    assert split != assign_splits(names, (0.64, 0.16, 0.20), seed=4)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 160, "val": 40, "test": 50}


# ------------------------------------------------------------------ rasterising


def test_on_grey_and_visibility() -> None:
    rgba = np.zeros((32, 32, 4), dtype=np.float32)
    assert np.all(on_grey(rgba) == BACKGROUND)  # fully transparent: background only
    rgba[8:24, 8:24] = (1.0, 1.0, 1.0, 1.0)  # white on transparent stays visible on grey
    image = on_grey(rgba)
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8
    assert visible_fraction(image, 40) == pytest.approx(0.25)
    assert rejection(rgba, image, RenderParams()) is None
    faint = np.zeros_like(rgba)
    faint[8:24, 8:24] = (0.55, 0.55, 0.55, 1.0)  # grey on grey: low contrast
    assert rejection(faint, on_grey(faint), RenderParams()).startswith("low contrast")
    square = np.ones_like(rgba)
    square[..., :3] = 0.2
    assert is_filled_square(square, 0.9)
    assert rejection(square, on_grey(square), RenderParams()) == "flat filled square (placeholder)"


def test_rasterise_png_and_svg(tmp_path: Path) -> None:
    png = tmp_path / "wide.png"
    Image.new("RGBA", (48, 24), (255, 0, 0, 255)).save(png)
    rgba = rasterise(str(png), RenderParams())
    assert rgba.shape == (32, 32, 4)
    assert rgba[16, 16, 3] == pytest.approx(1.0) and rgba[0, 16, 3] == 0.0  # padded square
    if shutil.which("rsvg-convert") is None:
        pytest.skip("rsvg-convert not installed: apt-get install -y librsvg2-bin")
    svg = tmp_path / "disc.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48">'
                   '<circle cx="24" cy="24" r="20" fill="#0000ff"/></svg>')  # fmt: skip
    rgba = rasterise(str(svg), RenderParams())
    assert rgba[16, 16, 2] == pytest.approx(1.0) and rgba[0, 0, 3] == 0.0


# ------------------------------------------------------------------ themes and packages


def test_parse_index_and_choose_the_nearest_size() -> None:
    text = """[Icon Theme]
Name=T
Directories=16x16/apps,48x48/apps,scalable/apps,64x64@2/apps,broken

[16x16/apps]
Size=16
Type=Fixed
Context=Applications

[48x48/apps]
Size=48
Type=fixed

[scalable/apps]
Size=64
MinSize=8
MaxSize=512
Type=Scalable

[64x64@2/apps]
Size=64
Scale=2
Type=Fixed

[broken]
Type=Fixed
"""
    dirs = parse_index(text)
    assert [d.path for d in dirs] == ["16x16/apps", "48x48/apps", "scalable/apps"]
    small, fixed, scalable = dirs
    assert (small.distance(48), fixed.distance(48), scalable.distance(48)) == (32, 0, 0)
    listing = [
        (small, "printer.png", "/i/T/16/printer.png"),
        (fixed, "printer.png", "/i/T/48/printer.png"),
        (scalable, "printer.svg", "/i/T/sc/printer.svg"),
        (small, "go-up.png", "/i/T/16/go-up.png"),
    ]
    chosen = choose_files("T", dirs, listing, 48)
    # scalable (64 nominal) and fixed 48 both serve 48 px: the larger nominal size wins
    assert chosen["printer"].path == "T/scalable/apps/printer.svg"
    assert chosen["go-up"].size == 16  # only the small one exists


def test_package_records() -> None:
    record = (
        "Package: tango-icon-theme\nVersion: 0.8.90-10\nSHA256: aaa\n\n"
        "Package: tango-icon-theme\nVersion: 0.8.90-11\nSHA256: bbb\n"
    )
    assert parse_index_sha256(record, "0.8.90-11") == "bbb"
    assert parse_index_sha256(record, "9") == ""
    text = "Files: *\nLicense: GPL-2+\n\nFiles: debian/*\nLicense: GPL-2+\nLicense: CC0-1.0\n"
    assert license_names(text) == ("GPL-2+", "CC0-1.0")
    assert "librsvg2-bin" in apt_install_command()
    assert apt_install_command().count("deepin-icon-theme") == 1


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian system")
def test_missing_packages_name_the_install_command() -> None:
    with pytest.raises(ThemesMissingError, match="apt-get install"):
        installed_versions(["icon-theme-that-does-not-exist"])


# ------------------------------------------------------------------ end to end


def _write_theme(root: Path, name: str, concepts: dict[str, np.ndarray]) -> Theme:
    """A theme folder with one 48 px PNG per concept (and a 16 px copy to ignore)."""
    (root / name / "48x48" / "apps").mkdir(parents=True)
    (root / name / "16x16" / "apps").mkdir(parents=True)
    (root / name / "index.theme").write_text(
        f"[Icon Theme]\nName={name}\nDirectories=16x16/apps,48x48/apps\n\n"
        "[16x16/apps]\nSize=16\nType=Fixed\n\n[48x48/apps]\nSize=48\nType=Fixed\n"
    )
    for concept, image in concepts.items():
        rgba = np.concatenate([image, np.full((1, 48, 48), 255, np.uint8)]).transpose(1, 2, 0)
        Image.fromarray(rgba).save(root / name / "48x48" / "apps" / f"{concept}.png")
        Image.fromarray(rgba).resize((16, 16)).save(
            root / name / "16x16" / "apps" / f"{concept}.png"
        )
    return Theme(f"pkg-{name.lower()}", name, "CC0-1.0", name.lower())


def test_build_end_to_end(tmp_path: Path) -> None:
    names = ("printer", "user-trash", "folder", "go-home", "scanner")
    themes = []
    for t in range(12):
        drawn = {n: _pattern(100 * t + i, 48) for i, n in enumerate(names)}
        if t == 11:
            drawn["printer"] = _pattern(0, 48)  # a copy of theme 0's printer: a duplicate
            del drawn["scanner"]  # scanner: 11 themes, one of them blank below
        if t == 10:
            drawn["scanner"] = np.full((3, 48, 48), 128, np.uint8)  # invisible on grey
        themes.append(_write_theme(tmp_path, f"T{t:02d}", drawn))
    catalogue = discover(themes, 48, tmp_path)
    assert catalogue.files["T00"]["printer"].size == 48
    packages = {t.package: PackageInfo(t.package, "1.0", "0" * 64, "", "", ()) for t in themes}
    rules = SelectRules(min_designs=12)
    built = build_dataset(catalogue, packages, themes, select_rules=rules, seed=5,
                          fractions=(0.6, 0.2, 0.2))  # fmt: skip
    manifest = built.manifest
    classes = {c["name"]: c for c in manifest["classes"]}  # type: ignore[attr-defined]
    # printer lost theme 11's copy, scanner lacks theme 11 and its T10 render is blank
    assert set(classes) == {"user-trash", "folder", "go-home"}
    assert [len(c["images"]) for c in classes.values()] == [12, 12, 12]
    excluded = manifest["excluded"]
    assert excluded == {  # scanner had 11 designs to begin with, printer fell to 11
        "concepts_considered": 4,
        "concepts_with_too_few_designs": 1,
        "fallback_files_per_theme": {},
        "designs_drawn_for_another_concept": 0,
    }
    total = sum(len(v) for v in built.images.values())
    assert total == 36 and all(v.shape[1:] == (3, 32, 32) for v in built.images.values())
    first = tmp_path / "out1"
    digest = write_dataset(built, first / "i.npz", first / "i.json")
    again = build_dataset(catalogue, packages, themes, select_rules=rules, seed=5,
                          fractions=(0.6, 0.2, 0.2))  # fmt: skip
    second = tmp_path / "out2"
    assert write_dataset(again, second / "i.npz", second / "i.json") == digest
    assert hashlib.sha256((first / "i.npz").read_bytes()).hexdigest() == digest
    assert (first / "i.json").read_bytes() == (second / "i.json").read_bytes()
    big = build_dataset(catalogue, packages, themes, params=RenderParams(image_size=64),
                        select_rules=rules, seed=5, fractions=(0.6, 0.2, 0.2))  # fmt: skip
    assert sum(len(v) for v in big.images.values()) == 36
    assert all(v.shape[1:] == (3, 64, 64) for v in big.images.values())


def test_pinned_themes_are_unique_and_families_start_with_an_original() -> None:
    directories = [t.directory for t in THEMES]
    assert len(directories) == len(set(directories))
    seen: set[str] = set()
    for theme in THEMES:  # a family's themes are listed together, the original first
        if theme.family in seen:
            assert THEMES[directories.index(theme.directory) - 1].family == theme.family
        seen.add(theme.family)
    assert isinstance(THEMES[0], Theme) and isinstance(IconDir, type)
