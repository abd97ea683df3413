"""What each genre decides (tempo, key, instruments, patterns, progressions), as data: a prompt
that names a genre gets its defaults here, and a new genre is a new table entry.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every progression starts on the tonic, and none dwells on the relative key: a listener (and a
# key finder) should hear the asked-for key.
_MAJOR_POP = ("I V vi IV", "I vi IV V", "I IV V IV", "I IV vi V", "I IV I V")
_MINOR_POP = ("i iv VI V", "i VI iv V", "i VI VII i", "i iv V i", "i VII VI V")
PROGRESSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pop": (_MAJOR_POP, _MINOR_POP),
    "modal": (
        ("I IV I V", "I bVII IV I", "I V IV IV", "I ii IV I"),
        ("i i VI VII", "i VI i VII", "i iv i VII", "i iv v i", "i VI VII i"),
    ),
    "jazz": (("I vi ii V", "I IV ii V", "I I ii V"), ("i iv ii° V", "i VI ii° V", "i iv V i")),
    "ambient": (("I iii IV I", "I V vi IV", "I IV I V"), ("i VI i VII", "i iv VI i", "i VI iv i")),
}

# Melody rhythm cells: 'x' starts a note, '-' holds it, '.' rests; one sixteenth per character.
CELLS = {
    "sparse": ("x-------", "x---x---", "x-----------x---", "x---", "....x---", "x-------........"),
    "medium": ("x-x-", "x---", "x--x", "x-xx", "..x-", "x-", ".x-x", "x---x-x-"),
    "busy": ("xxx-", "x-xx", "xx-x", "x-x-", "x.x.", ".xx-", "x---", "xxxx"),
}
DENSITIES = ("sparse", "medium", "busy")


@dataclass(frozen=True)
class Style:
    """Everything a genre decides; drum, bass and chord patterns are 16 sixteenths of one bar."""

    tempo: float
    tonic: str
    mode: str
    chords: str  # default chord instrument
    lead: str  # default lead instrument
    bass: str  # bass timbre
    drums: tuple[tuple[str, str], ...]  # (voice, pattern) with X/x/o for loud/medium/soft hits
    bass_pattern: str  # r=root, o=octave, f=fifth, a=approach to the next root, '-' hold, '.' rest
    chord_pattern: str
    progressions: str
    density: str
    drum_gain: float = 1.0
    swing: tuple[int, float] = (0, 0.0)  # (grid: 8 or 16, delay of the off-beat in sixteenths)
    sevenths: bool = False
    sidechain: bool = False
    reverb: float = 1.0  # wet level


_FOUR = "X...X...X...X..."
_BACKBEAT = "....X.......X..."
_EIGHTHS = "x.o.x.o.x.o.x.o."

# Each: tempo, tonic, mode, chord / lead instrument, bass timbre; drum patterns;
# bass pattern, chord pattern, progression family, melody density; then extras.
# fmt: off
STYLES: dict[str, Style] = {
    "techno": Style(
        128, "A", "minor", "pad", "pluck", "synth",
        (("kick", _FOUR), ("clap", "....x.......x..."), ("hat", ".o.o.o.o.o.o.o.o"), ("open", "..x...x...x...x.")),
        "..r-..r-..r-..r-", "x---------------", "modal", "busy", sidechain=True,
    ),
    "house": Style(
        124, "F", "minor", "piano", "pluck", "synth",
        (("kick", _FOUR), ("clap", "....x.......x..."), ("hat", "oooooooooooooooo"), ("open", "..x...x...x...x.")),
        "..r-..r...r-..o-", "..x-..x-..x-..x-", "pop", "medium", sevenths=True, sidechain=True,
    ),
    "edm": Style(
        128, "F", "minor", "pad", "lead", "synth",
        (("kick", _FOUR), ("clap", _BACKBEAT), ("open", "..x...x...x...x.")),
        "r-r-r-r-r-r-r-r-", "x---------------", "pop", "medium", sidechain=True,
    ),
    "ambient": Style(
        70, "E", "major", "pad", "bells", "sub",
        (("kick", "X...X...X...X..."), ("shaker", "o...o...o...o...")),
        "r---------------", "x---------------", "ambient", "sparse", drum_gain=0.55, reverb=1.8,
    ),
    "lofi": Style(
        85, "Eb", "major", "piano", "guitar", "sub",
        (("kick", "X.......X..x...."), ("snare", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-----.r--r-f---", "x---------x-----", "jazz", "sparse", drum_gain=0.85, swing=(8, 0.33), sevenths=True,
    ),
    "hiphop": Style(
        90, "C", "minor", "piano", "bells", "sub",
        (("kick", "X.....x.X......."), ("snare", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-----r---r-----", "x---------------", "pop", "medium", swing=(16, 0.2),
    ),
    "rock": Style(
        120, "E", "minor", "guitar", "lead", "electric",
        (("kick", "X.....x.X......."), ("snare", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-r-r-r-r-r-r-r-", "x-x-x-x-x-x-x-x-", "modal", "medium",
    ),
    "pop": Style(
        110, "C", "major", "piano", "lead", "electric",
        (("kick", "X.......X.x....."), ("clap", _BACKBEAT), ("hat", _EIGHTHS)),
        "r-.r..r-r-.r..o-", "x---x---x---x---", "pop", "medium",
    ),
    "jazz": Style(
        120, "Bb", "major", "piano", "brass", "upright",
        (("kick", "o...o...o...o..."), ("ride", "X...x.o.X...x.o."), ("hat", "....x.......x...")),
        "walk", "x-....x-........", "jazz", "medium", drum_gain=0.8, swing=(8, 0.67), sevenths=True,
    ),
    "orchestral": Style(
        100, "D", "minor", "strings", "brass", "sub",
        (("kick", "X...x...X...x..."), ("snare", "....o.......o...")),
        "r-------r-----f-", "x---------------", "pop", "sparse", drum_gain=0.8, reverb=1.5,
    ),
    "funk": Style(
        105, "E", "minor", "guitar", "brass", "electric",
        (("kick", "X..x..x.X.....x."), ("snare", "....X..o.o..X..o"), ("hat", "xoxoxoxoxoxoxoxo")),
        "r..o..r.r.o..ro.", "..x.x...x.x..x..", "modal", "busy", swing=(16, 0.12), sevenths=True,
    ),
    "reggae": Style(
        80, "G", "major", "organ", "flute", "sub",
        (("kick", "X...x...X...x..."), ("snare", "........X......."), ("hat", "x...x...x...x...")),
        "r---..f-r-....a-", "..x...x...x...x.", "pop", "medium",
    ),
    "dnb": Style(
        174, "F", "minor", "pad", "lead", "synth",
        (("kick", "X.........X....."), ("snare", _BACKBEAT), ("hat", "X.o.X.o.X.o.X.o.")),
        "r---------r-----", "x---------------", "modal", "busy",
    ),
}
# fmt: on
DEFAULT_GENRE = "pop"
