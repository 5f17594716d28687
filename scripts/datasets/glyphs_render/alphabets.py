"""Pinned inputs of the glyph benchmark: Debian font packages, alphabets and their letters.

This module is the single source of truth for what the dataset is rendered from. Changing
anything here changes the data, so bump the dataset version when you do.
"""

from __future__ import annotations

from dataclasses import dataclass

# Debian 12 (bookworm) packages whose fonts are scanned; nothing else on the system is used.
FONT_PACKAGES: tuple[str, ...] = (
    # Latin, Greek, Cyrillic (+ many scripts in Noto and FreeFont)
    "fonts-noto-core", "fonts-freefont-otf", "fonts-dejavu-core", "fonts-dejavu-extra",
    "fonts-liberation2", "fonts-urw-base35", "fonts-texgyre", "fonts-sil-gentiumplus",
    "fonts-sil-charis", "fonts-sil-andika", "fonts-linuxlibertine", "fonts-paratype",
    "fonts-cmu", "fonts-gfs-didot", "fonts-gfs-neohellenic", "fonts-gfs-artemisia",
    # handwriting-like and decorative Latin
    "fonts-bwht", "fonts-breip", "fonts-dkg-handwriting", "fonts-femkeklaver",
    "fonts-humor-sans", "fonts-rufscript", "fonts-sjfonts", "fonts-comic-neue", "fonts-kristi",
    "fonts-dancingscript", "fonts-kaushanscript", "fonts-ecolier-court",
    # Indic
    "fonts-lohit-deva", "fonts-lohit-beng-bengali", "fonts-lohit-gujr", "fonts-lohit-guru",
    "fonts-lohit-knda", "fonts-lohit-mlym", "fonts-lohit-orya", "fonts-lohit-taml",
    "fonts-lohit-telu", "fonts-samyak-deva", "fonts-samyak-gujr", "fonts-samyak-mlym",
    "fonts-samyak-taml", "fonts-deva-extra", "fonts-gujr-extra", "fonts-beng-extra",
    "fonts-guru-extra", "fonts-orya-extra", "fonts-telu-extra", "fonts-teluguvijayam",
    "fonts-gubbi", "fonts-navilu", "fonts-sil-annapurna", "fonts-gargi", "fonts-nakula",
    "fonts-sahadeva", "fonts-sarai", "fonts-kalapi", "fonts-meera-inimai",
    # Malayalam (SMC)
    "fonts-smc-anjalioldlipi", "fonts-smc-chilanka", "fonts-smc-dyuthi", "fonts-smc-gayathri",
    "fonts-smc-karumbi", "fonts-smc-keraleeyam", "fonts-smc-manjari", "fonts-smc-meera",
    "fonts-smc-rachana", "fonts-smc-raghumalayalamsans", "fonts-smc-suruma", "fonts-smc-uroob",
    # Thai
    "fonts-tlwg-garuda-ttf", "fonts-tlwg-kinnari-ttf", "fonts-tlwg-laksaman-ttf",
    "fonts-tlwg-loma-ttf", "fonts-tlwg-norasi-ttf", "fonts-tlwg-purisa-ttf",
    "fonts-tlwg-sawasdee-ttf", "fonts-tlwg-typist-ttf", "fonts-tlwg-umpush-ttf",
    "fonts-tlwg-waree-ttf",
    # South-East Asian, Tibetan, Georgian, Ethiopic
    "fonts-arundina", "fonts-khmeros", "fonts-sil-mondulkiri", "fonts-myanmar",
    "fonts-sil-padauk", "fonts-tibetan-machine", "fonts-monlam", "fonts-ddc-uchen",
    "fonts-bpg-georgian", "fonts-senamirmir-washra", "fonts-sil-abyssinica",
    # Hebrew, Arabic
    "culmus", "culmus-fancy", "fonts-ldco", "fonts-sil-ezra", "fonts-kacst", "fonts-kacst-one",
    "fonts-hosny-amiri", "fonts-sil-scheherazade", "fonts-sil-lateef", "fonts-sil-harmattan",
    "fonts-paktype", "fonts-arabeyes", "fonts-farsiweb",
    # Cherokee and others
    "fonts-lg-aboriginal",
    # Korean, Japanese
    "fonts-unfonts-core", "fonts-nanum", "fonts-baekmuk", "fonts-alee", "fonts-ipafont-gothic",
    "fonts-ipafont-mincho", "fonts-takao-gothic", "fonts-vlgothic", "fonts-mplus", "fonts-seto",
    "fonts-yusei-magic", "fonts-kiloji", "fonts-sawarabi-gothic", "fonts-sawarabi-mincho",
    # wide-coverage extras
    "fonts-mph-2b-damase", "fonts-georgewilliams",
)  # fmt: skip


# Packages whose fonts map some scripts to glyphs of another (Monlam draws Tibetan letters
# at Thai code points): they are used only for the alphabets listed here.
PACKAGE_ONLY_FOR: dict[str, tuple[str, ...]] = {"fonts-monlam": ("tibetan",)}


def apt_install_command() -> str:
    """The shell command that installs every font package the renderer reads."""
    return "apt-get update && apt-get install -y --no-install-recommends " + " ".join(FONT_PACKAGES)


@dataclass(frozen=True)
class Alphabet:
    """One alphabet of the benchmark.

    Attributes:
        name: short lowercase identifier, used in class names (``"hebrew"``).
        letters: Unicode code points of its letters, in a fixed order; one class each.
    """

    name: str
    letters: tuple[int, ...]


def _span(first: int, last: int, *skip: int) -> tuple[int, ...]:
    """Code points ``first..last`` inclusive, without ``skip``."""
    return tuple(cp for cp in range(first, last + 1) if cp not in skip)


# Gojuon order (46 letters); small kana, voiced kana and obsolete letters are left out.
_HIRAGANA: tuple[int, ...] = (
    0x3042, 0x3044, 0x3046, 0x3048, 0x304A, 0x304B, 0x304D, 0x304F, 0x3051, 0x3053,
    0x3055, 0x3057, 0x3059, 0x305B, 0x305D, 0x305F, 0x3061, 0x3064, 0x3066, 0x3068,
    0x306A, 0x306B, 0x306C, 0x306D, 0x306E, 0x306F, 0x3072, 0x3075, 0x3078, 0x307B,
    0x307E, 0x307F, 0x3080, 0x3081, 0x3082, 0x3084, 0x3086, 0x3088, 0x3089, 0x308A,
    0x308B, 0x308C, 0x308D, 0x308F, 0x3092, 0x3093,
)  # fmt: skip

# The 80 kanji of Japanese school grade 1 (kyouiku kanji, first year).
_KANJI_GRADE1: tuple[int, ...] = (
    0x4E00, 0x53F3, 0x96E8, 0x5186, 0x738B, 0x97F3, 0x4E0B, 0x706B, 0x82B1, 0x8C9D,
    0x5B66, 0x6C17, 0x4E5D, 0x4F11, 0x7389, 0x91D1, 0x7A7A, 0x6708, 0x72AC, 0x898B,
    0x4E94, 0x53E3, 0x6821, 0x5DE6, 0x4E09, 0x5C71, 0x5B50, 0x56DB, 0x7CF8, 0x5B57,
    0x8033, 0x4E03, 0x8ECA, 0x624B, 0x5341, 0x51FA, 0x5973, 0x5C0F, 0x4E0A, 0x68EE,
    0x4EBA, 0x6C34, 0x6B63, 0x751F, 0x9752, 0x5915, 0x77F3, 0x8D64, 0x5343, 0x5DDD,
    0x5148, 0x65E9, 0x8349, 0x8DB3, 0x6751, 0x5927, 0x7537, 0x7AF9, 0x4E2D, 0x866B,
    0x753A, 0x5929, 0x7530, 0x571F, 0x4E8C, 0x65E5, 0x5165, 0x5E74, 0x767D, 0x516B,
    0x767E, 0x6587, 0x6728, 0x672C, 0x540D, 0x76EE, 0x7ACB, 0x529B, 0x6797, 0x516D,
)  # fmt: skip

# First-order (vowel ä) syllables of the 34 base consonants of Ge'ez/Amharic.
_ETHIOPIC: tuple[int, ...] = (
    0x1200, 0x1208, 0x1210, 0x1218, 0x1220, 0x1228, 0x1230, 0x1238, 0x1240, 0x1260,
    0x1268, 0x1270, 0x1278, 0x1280, 0x1290, 0x1298, 0x12A0, 0x12A8, 0x12B8, 0x12C8,
    0x12D0, 0x12D8, 0x12E0, 0x12E8, 0x12F0, 0x1300, 0x1308, 0x1320, 0x1328, 0x1330,
    0x1338, 0x1340, 0x1348, 0x1350,
)  # fmt: skip

# Letters: independent vowels and consonants of each script's Unicode block (categories
# Lo/Lu/Ll), leaving out nukta forms, unassigned code points and rare late additions.
ALPHABETS: tuple[Alphabet, ...] = (
    Alphabet("latin", _span(0x0041, 0x005A)),  # A-Z
    Alphabet("greek", _span(0x03B1, 0x03C9, 0x03C2)),  # lowercase alpha-omega, no final sigma
    Alphabet("cyrillic", _span(0x0410, 0x042F)),  # uppercase A-YA
    Alphabet("armenian", _span(0x0531, 0x0556)),  # uppercase AYB-FEH
    Alphabet("cherokee", _span(0x13A0, 0x13F4)),
    Alphabet("georgian", _span(0x10D0, 0x10F0)),  # Mkhedruli
    Alphabet("hebrew", _span(0x05D0, 0x05EA)),  # alef-tav with final forms
    Alphabet(
        "arabic",
        (0x0621, *_span(0x0627, 0x063A), *_span(0x0641, 0x064A), 0x067E, 0x0686, 0x0698, 0x06AF),
    ),
    Alphabet("ethiopic", _ETHIOPIC),
    Alphabet(
        "devanagari",
        (
            *_span(0x0905, 0x090B),
            0x090F,
            0x0910,
            0x0913,
            0x0914,
            *_span(0x0915, 0x0939, 0x0929, 0x0931, 0x0934),
        ),
    ),  # fmt: skip
    Alphabet(
        "bengali",
        (
            *_span(0x0985, 0x098B),
            0x098F,
            0x0990,
            0x0993,
            0x0994,
            *_span(0x0995, 0x09A8),
            *_span(0x09AA, 0x09B0),
            0x09B2,
            *_span(0x09B6, 0x09B9),
        ),
    ),  # fmt: skip
    Alphabet(
        "gujarati",
        (
            *_span(0x0A85, 0x0A8B),
            0x0A8F,
            0x0A90,
            0x0A93,
            0x0A94,
            *_span(0x0A95, 0x0AA8),
            *_span(0x0AAA, 0x0AB0),
            0x0AB2,
            0x0AB3,
            *_span(0x0AB5, 0x0AB9),
        ),
    ),  # fmt: skip
    Alphabet(
        "gurmukhi",
        (
            *_span(0x0A05, 0x0A0A),
            0x0A0F,
            0x0A10,
            0x0A13,
            0x0A14,
            *_span(0x0A15, 0x0A28),
            *_span(0x0A2A, 0x0A30),
            0x0A32,
            0x0A35,
            0x0A38,
            0x0A39,
        ),
    ),  # fmt: skip
    Alphabet(
        "tamil",
        (
            *_span(0x0B85, 0x0B8A),
            *_span(0x0B8E, 0x0B90),
            *_span(0x0B92, 0x0B94),
            0x0B95,
            0x0B99,
            0x0B9A,
            0x0B9C,
            0x0B9E,
            0x0B9F,
            0x0BA3,
            0x0BA4,
            0x0BA8,
            0x0BA9,
            0x0BAA,
            *_span(0x0BAE, 0x0BB5),
            *_span(0x0BB7, 0x0BB9),
        ),
    ),  # fmt: skip
    Alphabet(
        "telugu",
        (
            *_span(0x0C05, 0x0C0B),
            *_span(0x0C0E, 0x0C10),
            *_span(0x0C12, 0x0C14),
            *_span(0x0C15, 0x0C28),
            *_span(0x0C2A, 0x0C33),
            *_span(0x0C35, 0x0C39),
        ),
    ),  # fmt: skip
    Alphabet(
        "kannada",
        (
            *_span(0x0C85, 0x0C8B),
            *_span(0x0C8E, 0x0C90),
            *_span(0x0C92, 0x0C94),
            *_span(0x0C95, 0x0CA8),
            *_span(0x0CAA, 0x0CB3),
            *_span(0x0CB5, 0x0CB9),
        ),
    ),  # fmt: skip
    Alphabet(
        "malayalam",
        (
            *_span(0x0D05, 0x0D0B),
            *_span(0x0D0E, 0x0D10),
            *_span(0x0D12, 0x0D14),
            *_span(0x0D15, 0x0D28),
            *_span(0x0D2A, 0x0D39),
        ),
    ),  # fmt: skip
    Alphabet("thai", _span(0x0E01, 0x0E2E)),  # consonants ko kai-ho nokhuk
    Alphabet("khmer", _span(0x1780, 0x17A2)),  # consonants
    Alphabet("myanmar", (*_span(0x1000, 0x1021), *_span(0x1023, 0x1027), 0x1029, 0x102A)),
    Alphabet("tibetan", _span(0x0F40, 0x0F69, 0x0F48)),
    Alphabet("hiragana", _HIRAGANA),
    Alphabet("katakana", tuple(cp + 0x60 for cp in _HIRAGANA)),
    Alphabet("kanji", _KANJI_GRADE1),
    Alphabet("hangul", _span(0x3131, 0x3163)),  # compatibility jamo
)

# Alphabets that share look-alike letters; each group stays on one side of the split
# (on top of the IoU de-duplication of cross-alphabet pairs).
HOMOGLYPH_GROUPS: tuple[tuple[str, ...], ...] = (
    ("latin", "greek", "cyrillic", "armenian", "cherokee"),
    ("hiragana", "katakana", "kanji", "hangul"),  # squares, bars and circles in CJK fonts
    ("telugu", "kannada"),  # sister scripts: many letters differ only in small strokes
)

# Look-alikes the IoU test misses because the shapes differ only in proportions (a circle
# against an oval): ``(kept alphabet, letter), (dropped alphabet, letter)``.
PINNED_LOOK_ALIKES: tuple[tuple[tuple[str, int], tuple[str, int]], ...] = (
    (("latin", 0x004F), ("myanmar", 0x101D)),  # O and MYANMAR LETTER WA: circles
    (("latin", 0x004F), ("malayalam", 0x0D20)),  # O and MALAYALAM LETTER TTHA: circles
)

# Where the homoglyph groups go. Putting them in meta-train keeps the Latin-like letters
# (which every pretrained eye knows) out of meta-test.
HOMOGLYPH_GROUP_SPLIT = "train"


def alphabet_by_name(name: str) -> Alphabet:
    """The pinned alphabet called ``name``; ``KeyError`` names the known ones."""
    for alphabet in ALPHABETS:
        if alphabet.name == name:
            return alphabet
    raise KeyError(f"unknown alphabet {name!r}; known: {', '.join(a.name for a in ALPHABETS)}")
