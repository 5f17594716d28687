"""Turn the icon names of many themes into concepts: one class per freedesktop icon concept.

Themes name one concept several ways: legacy names (``gtk-print``, ``stock_print``),
synonyms (``drive-optical`` / ``media-optical``), application ids. Within one theme, names
that share one file are aliases. A file shared by many names is a generic fallback (one
archive drawing standing in for 50 archive formats) and depicts none of them.

Concepts are built from alias evidence that several themes agree on, so that one theme's
shortcut (drawing ``zoom-fit-best`` as ``zoom-in``) does not merge two concepts:

1. Names are filtered (:func:`usable_name`): no ``-symbolic``, no ``-rtl``/``-ltr``
   mirror variants, no placeholder names.
2. Per theme, a file shared by more than ``max_aliases`` standard names is a fallback and
   is dropped (:func:`drop_fallbacks`).
3. Two names are aliases when at least ``min_alias_themes`` themes, and at least
   ``alias_share`` of the themes that have both, give them one file (:func:`alias_shares`).
4. Names are visited from the most widespread down; a standard name that is no alias of an
   earlier concept's head starts a concept, any other name joins the first head it is an
   alias of (:func:`cluster_names`). Joining a head, not any member, keeps chains
   (a ~ b ~ c with a !~ c) from merging unrelated concepts.
5. Each theme gives a concept at most one design: the file of the concept's head, or in a
   theme without it, of an alias that no theme draws apart from the head
   (``stand_in_share``). A file a theme uses for several concepts goes to the concept of
   the name it was drawn as (the file a symlink points to), and to none when that is not
   one of them (:func:`assign_designs`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import combinations

# Names of the old GNOME/KDE/GTK stock schemes, distribution menus and application ids.
# They may join a concept as aliases but never name one.
_LEGACY = re.compile(
    r"^(gtk-|gnome-|stock_|redhat-|xfce-|xfce4-|package_|kde-|mate-|cs-|org\.|com\.|io\.|net\."
    r"|lutris_|steam_icon)"
)
_STANDARD = re.compile(r"^[a-z0-9]+(?:[-.+][a-z0-9]+)*$")
_MIRRORED = ("-rtl", "-ltr")

PLACEHOLDER_NAMES: frozenset[str] = frozenset({"image-missing", "gtk-missing-image", "unknown"})
"""Names themes use for "no icon" drawings; never a concept."""


@dataclass(frozen=True)
class ConceptRules:
    """Alias and fallback thresholds; recorded in the manifest.

    Attributes:
        max_aliases: a file shared by more standard names than this, within one theme, is a
            generic fallback and depicts none of them.
        min_alias_themes: two names are aliases only if at least this many themes give
            them one file ...
        alias_share: ... and at least this fraction of the themes that have both names.
        stand_in_share: in a theme without the concept's head name, an alias serves as the
            design only if at least this fraction of the themes having both names give
            them one file (1.0: no theme draws them apart), so that a theme's own drawing
            of a narrower name (a PDF icon for ``x-office-document``) is not mislabelled.
    """

    max_aliases: int = 4
    min_alias_themes: int = 3
    alias_share: float = 0.5
    stand_in_share: float = 1.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class IconRef:
    """What one icon name of one theme points at.

    Attributes:
        digest: SHA-256 of the file's content (copies and symlinks share it).
        drawn_as: the name of the file itself, after following symlinks: the name the
            artist drew it for.
    """

    digest: str
    drawn_as: str


@dataclass(frozen=True)
class Concept:
    """One class: a canonical name, its aliases, and the icon name each theme draws it with.

    Attributes:
        name: the canonical name (the concept's most widespread standard name).
        aliases: every name merged into it, canonical included, sorted.
        designs: theme -> the icon name whose file is the theme's design, in theme order.
    """

    name: str
    aliases: tuple[str, ...]
    designs: dict[str, str]


def usable_name(name: str) -> bool:
    """Whether an icon name may stand for a concept or an alias of one."""
    return "symbolic" not in name and not name.endswith(_MIRRORED) and name not in PLACEHOLDER_NAMES


def is_standard(name: str) -> bool:
    """Whether ``name`` follows the freedesktop naming scheme (may name a concept)."""
    return bool(_STANDARD.match(name)) and not _LEGACY.match(name)


def alias_groups(files: Mapping[str, IconRef]) -> dict[str, list[str]]:
    """Group one theme's icon names by the file content they use: digest -> sorted names."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, ref in files.items():
        groups[ref.digest].append(name)
    return {digest: sorted(names) for digest, names in sorted(groups.items())}


def drop_fallbacks(
    files: Mapping[str, IconRef], max_aliases: int
) -> tuple[dict[str, IconRef], dict[str, list[str]]]:
    """Split one theme's icons into the usable names kept and the generic fallbacks.

    Legacy names do not count towards ``max_aliases``: they are aliases by nature.

    Returns:
        the kept ``name -> ref`` and, per fallback file dropped, ``digest -> its names``.
    """
    usable = {name: ref for name, ref in files.items() if usable_name(name)}
    kept: dict[str, IconRef] = {}
    fallbacks: dict[str, list[str]] = {}
    for digest, names in alias_groups(usable).items():
        if sum(is_standard(n) for n in names) > max_aliases:
            fallbacks[digest] = names
        else:
            kept.update({name: usable[name] for name in names})
    return kept, fallbacks


def alias_shares(
    themes: Mapping[str, Mapping[str, IconRef]], min_themes: int
) -> dict[str, dict[str, float]]:
    """For each name, its candidate aliases and how consistently themes treat them as such.

    Args:
        themes: theme -> (kept name -> ref), fallbacks already dropped.
        min_themes: pairs that fewer themes draw with one file are left out.

    Returns:
        name -> (other name -> share of the themes having both names that give both one
        file), symmetric.
    """
    shared: Counter[tuple[str, str]] = Counter()
    for files in themes.values():
        for names in alias_groups(files).values():
            shared.update(combinations(names, 2))
    shares: dict[str, dict[str, float]] = defaultdict(dict)
    for (a, b), same in sorted(shared.items()):
        if same < min_themes:
            continue
        both = sum(1 for files in themes.values() if a in files and b in files)
        shares[a][b] = shares[b][a] = same / both
    return dict(shares)


def cluster_names(
    presence: Mapping[str, int], shares: Mapping[str, Mapping[str, float]], min_share: float
) -> dict[str, str]:
    """Name -> the head of its concept (see step 4 of the module docstring).

    Args:
        presence: name -> number of themes that have it.
        shares: see :func:`alias_shares`.
        min_share: names are aliases when their share is at least this.

    Returns:
        every clustered name -> its concept's head; legacy names that are no alias of a
        head are left out.
    """
    heads: list[str] = []
    head_of: dict[str, str] = {}
    for name in sorted(presence, key=lambda n: (not is_standard(n), -presence[n], len(n), n)):
        linked = {other for other, share in shares.get(name, {}).items() if share >= min_share}
        head = next((h for h in heads if h in linked), None)
        if head is not None:
            head_of[name] = head
        elif is_standard(name):
            heads.append(name)
            head_of[name] = name
    return head_of


def assign_designs(
    themes: Mapping[str, Mapping[str, IconRef]],
    head_of: Mapping[str, str],
    stand_ins: Mapping[str, set[str]],
) -> tuple[list[Concept], list[dict[str, str]]]:
    """Give every concept at most one design per theme (step 5 of the module docstring).

    Args:
        themes: theme -> (kept name -> ref), in the themes' pinned order.
        head_of: name -> its concept's head.
        stand_ins: head -> the aliases whose file may serve as the concept's design in a
            theme that lacks the head itself.

    Returns:
        the concepts sorted by name, and one record (theme, name, reason) per design taken
        from a concept because its file belongs to another concept or to none.
    """
    presence = Counter(name for files in themes.values() for name in files)
    members: dict[str, list[str]] = defaultdict(list)
    for name, head in head_of.items():
        members[head].append(name)

    def widespread_first(name: str) -> tuple[int, int, str]:
        return -presence[name], len(name), name

    ranked = {
        head: [head, *sorted(stand_ins.get(head, set()) - {head}, key=widespread_first)]
        for head in members
    }
    chosen: dict[str, dict[str, str]] = {head: {} for head in members}
    for theme, files in themes.items():
        for head, names in ranked.items():
            used = next((n for n in names if n in files), None)
            if used is not None:
                chosen[head][theme] = used
    users: dict[tuple[str, str], list[str]] = defaultdict(list)
    for head, designs in chosen.items():
        for theme, name in designs.items():
            users[(theme, themes[theme][name].digest)].append(head)
    moved: list[dict[str, str]] = []
    for head, designs in chosen.items():
        for theme, name in list(designs.items()):
            ref = themes[theme][name]
            if len(users[(theme, ref.digest)]) > 1 and head_of.get(ref.drawn_as) != head:
                owner = head_of.get(ref.drawn_as, "no concept")
                moved.append({"theme": theme, "name": name, "reason": f"drawn as {owner}"})
                del designs[theme]
    concepts = [
        Concept(head, tuple(sorted(members[head])), chosen[head]) for head in sorted(members)
    ]
    return concepts, moved


def build_concepts(
    themes: Mapping[str, Mapping[str, IconRef]], rules: ConceptRules
) -> tuple[list[Concept], list[dict[str, object]]]:
    """Filter names, drop fallbacks, merge aliases and assign one design per theme.

    Args:
        themes: theme -> (icon name -> ref), every name the theme has, in the themes'
            pinned order.
        rules: the thresholds.

    Returns:
        the concepts sorted by name, and the records of what was dropped (fallback files,
        designs whose file belongs to another concept) for the manifest.
    """
    kept: dict[str, dict[str, IconRef]] = {}
    dropped: list[dict[str, object]] = []
    for theme, files in themes.items():
        kept[theme], fallbacks = drop_fallbacks(files, rules.max_aliases)
        dropped.extend(
            {"theme": theme, "reason": "fallback", "names": names} for names in fallbacks.values()
        )
    presence = Counter(name for files in kept.values() for name in files)
    shares = alias_shares(kept, rules.min_alias_themes)
    head_of = cluster_names(presence, shares, rules.alias_share)
    stand_ins: dict[str, set[str]] = defaultdict(set)
    for name, head in head_of.items():
        if name != head and shares[name][head] >= rules.stand_in_share:
            stand_ins[head].add(name)
    concepts, moved = assign_designs(kept, head_of, stand_ins)
    dropped.extend(dict(record) for record in moved)
    return concepts, dropped
