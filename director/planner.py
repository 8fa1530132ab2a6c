"""Scene -> shot plan, offline and deterministic: the same request always gives the same plan.

The planner reads the description the way a storyboard artist would:

1. It splits the text into *beats*: sentences, then clauses joined by "then", "while", "as",
   "when", "after" (reordered: "A after B" plays B first), commas between actions, and "and"
   between actions of different kinds. At most :data:`MAX_BEATS` beats are planned.
2. It finds the characters: the request's, capitalised names in the text that are not sentence
   starters or common words, and creature/role nouns ("the dragon", "a stranger"). Those not in
   the request are reported (:attr:`ScenePlan.detected_characters`, :attr:`ScenePlan.notes`).
3. It classifies each beat (action, dialogue, reveal, chase, calm) and covers it by film grammar:
   an establishing shot first; action as wide -> medium -> close-up with an impact and a reaction
   shot; dialogue as a two-shot, shot / reverse shot over the shoulder and a reaction; a reveal
   as a slow push-in; a chase with tracking shots and a POV. Each coverage shot has a priority,
   so a busy scene keeps the essential shot of every beat within :data:`MAX_SHOTS`.
4. Time of day and place come from the text ("at night", "in the ruins") and carry forward;
   each shot's continuity notes keep the 180° line (who is screen-left / screen-right), the time
   and the place. Mood and lighting follow the beat, so a scene can go calm -> intense.
5. Durations sit on the render grid (multiples of 0.5 s and whole frames at ``fps``, at least
   1 s); with ``target_duration_s`` they sum to the target within 0.5 s.

Text that is not English gets a generic plan (establishing, medium, close-up per sentence, with a
few non-English action/chase/dialogue/reveal words recognised) and a note saying so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import replace as _replace

from events.models import SceneRequested, ShotSpec

DURATION_STEP_S = 0.5
MIN_SHOT_S = 1.0
MAX_SHOT_S = 60.0
MAX_SHOT_FRAMES = 600
MAX_BEATS = 8
MAX_SHOTS = 12
MAX_DETECTED = 8
EXTRA_RANK = 5  # coverage used only to fill a long target duration
COMFORTABLE_SHOT_S = 6.0
DEFAULT_PLACE = "a stylised anime landscape"
DEFAULT_TIME = "late afternoon"
# The scene's colour palette by the time of day it opens at.
PALETTES = {
    "dawn": "soft pastel pinks and cool blues",
    "morning": "fresh pale greens and light gold",
    "day": "bright saturated natural colours",
    DEFAULT_TIME: "warm golden tones with soft shadows",
    "dusk": "warm amber, magenta and violet",
    "night": "deep blues and teal with warm highlights",
}

_LEADING_PHRASES = re.compile(
    r"^\s*(please\s+)?(create|make|generate|render|show|draw)\s+(me\s+)?(an?\s+|the\s+)?"
    r"(anime\s+)?(scene|shot|sequence|clip)?\s*(where|in which|of|with|showing)?\s*",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_QUOTE = re.compile(r'"[^"]*"|“[^”]*”|「[^」]*」|『[^』]*』')
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


# --- vocabulary -----------------------------------------------------------------------------

def _forms(*bases: str) -> dict[str, str]:
    """Regular English forms of each verb (base, -s, -ed, -ing), each mapped to its base."""
    out: dict[str, str] = {}
    for base in bases:
        forms = {base}
        consonant_y = base.endswith("y") and base[-2:-1] not in tuple("aeiou")
        if base.endswith(("s", "sh", "ch", "x", "z")):
            forms.add(base + "es")
        elif consonant_y:
            forms.update({base[:-1] + "ies", base[:-1] + "ied"})
        else:
            forms.add(base + "s")
        if base.endswith("ee"):
            forms.update({base + "ing", base + "d"})
        elif base.endswith("e"):
            forms.update({base[:-1] + "ing", base + "d"})
        else:
            forms.update({base + "ing", base + "ed"})
        if len(base) >= 3 and base[-1] in "bdgmnpt" and base[-2] in "aeiou" and base[-3] not in "aeiou":
            forms.update({base + base[-1] + "ing", base + base[-1] + "ed"})
        for form in forms:
            out.setdefault(form, base)
    return out


def _irregular(pairs: str) -> dict[str, str]:
    return dict(pair.split(":") for pair in pairs.split())


_KIND_WORDS: dict[str, dict[str, str]] = {
    "action": {
        **_forms("fight", "attack", "strike", "clash", "slash", "punch", "kick", "battle", "duel", "stab",
                 "charge", "swing", "parry", "dodge", "hit", "smash", "shoot", "blast", "explode", "slay",
                 "kill", "tackle", "spar", "wrestle", "grapple", "lunge", "counter", "ambush", "collide",
                 "destroy", "throw", "crush", "bite", "claw", "slam", "brawl", "combat", "war", "defeat"),
        **_irregular("fought:fight struck:strike slew:slay slain:slay swung:swing threw:throw thrown:throw "
                     "hit:hit bit:bite"),
    },
    "dialogue": {
        **_forms("say", "tell", "ask", "talk", "speak", "confess", "whisper", "shout", "yell", "reply",
                 "answer", "argue", "explain", "promise", "apologize", "apologise", "admit", "chat", "plead",
                 "beg", "thank", "greet", "insist", "warn", "declare", "announce", "tease", "scream",
                 "murmur", "respond", "converse", "discuss"),
        **_irregular("said:say told:tell spoke:speak spoken:speak"),
    },
    "reveal": {
        **_forms("reveal", "discover", "find", "see", "notice", "spot", "uncover", "unveil", "realize",
                 "realise", "recognize", "recognise", "glimpse", "appear", "emerge", "arrive",
                 "materialize", "materialise"),
        **_irregular("found:find saw:see seen:see seeing:see sees:see"),
    },
    "chase": {
        **_forms("chase", "run", "flee", "pursue", "escape", "race", "sprint", "dash", "hunt"),
        **_irregular("ran:run fled:flee fleeing:flee"),
    },
}
_KIND_OF: dict[str, tuple[str, str]] = {
    form: (kind, base) for kind, forms in _KIND_WORDS.items() for form, base in forms.items()
}
_PAST = frozenset({form for form, (_, base) in _KIND_OF.items() if form != base and not form.endswith(
    ("s", "ing", "ed", "d"))} | {"was", "had", "did", "went", "came", "saw", "got", "left", "stood", "sat", "fell",
                                 "rose", "knew", "thought", "felt", "made", "took", "gave", "held", "kept", "met"})
_ENTRANCE = frozenset({"appear", "emerge", "arrive", "materialize", "materialise"})
_MOVING = frozenset(_forms("walk", "stroll", "wander", "travel", "ride", "fly", "climb", "swim", "drive",
                           "sail", "float", "drift", "march", "hike", "wade")) | {
    "flew", "flown", "rode", "ridden", "swam", "drove", "driven"}
# Non-English words (substrings of the lower-cased text), used only when the text is not English.
_FOREIGN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dialogue", ("「", "話", "言う", "言った", "叫", " parle", " dit ", " habla", " dice ", " sagt ",
                  " spricht")),
    ("action", ("戦", "闘", "攻撃", "斬", "殴", "combat", " se bat", "attaqu", " lucha", " pelea", " atac",
                "kämpf", "greift", "angriff")),
    ("chase", ("追", "逃げ", "poursui", " court ", "persigu", " corre ", " huye", "verfolg", " rennt", "flieht")),
    ("reveal", ("見つけ", "現れ", "découvr", "apparaît", " trouve", "descubr", " aparece", "encuentr",
                "entdeck", "erscheint")),
)

_SAD = frozenset({*_forms("cry", "mourn", "grieve", "sob", "weep", "remember", "miss"), "wept", "tears",
                  "goodbye", "farewell", "lonely", "alone", "sad", "sorrow", "funeral", "grave", "lost",
                  "regret", "memories", "memory"})
_TENDER = frozenset({*_forms("love", "confess", "hug", "embrace", "kiss", "smile", "comfort", "laugh"),
                     "gently", "warmly", "blush", "blushes"})
_CONFLICT = frozenset({*_forms("argue", "shout", "yell", "threaten", "accuse", "demand", "insult", "glare",
                                "scream", "snarl", "refuse"), "angrily", "furious"})
_EERIE = frozenset({*_forms("sneak", "hide", "creep", "search", "explore", "investigate", "lurk"), "hid",
                    "hidden", "shadow", "shadows", "dark", "darkness", "eerie", "ominous", "fog", "mist",
                    "abandoned", "silent", "haunted", "mysterious", "strange"})
_FIRE = frozenset({"fire", "fires", "flame", "flames", "burning", "torch", "torches", "campfire", "lantern",
                   "lanterns", "candle", "candles", "bonfire", "embers"})
_NEON = frozenset({"neon", "cyberpunk", "hologram", "holograms"})

_TIME_WORDS = {
    **dict.fromkeys(("night", "midnight", "moonlit", "moonlight", "tonight", "nighttime", "starry", "starlight",
                     "夜"), "night"),
    **dict.fromkeys(("dusk", "sunset", "twilight", "evening", "夕方", "夕暮れ"), "dusk"),
    **dict.fromkeys(("dawn", "sunrise", "daybreak", "夜明け"), "dawn"),
    **dict.fromkeys(("morning", "朝"), "morning"),
    **dict.fromkeys(("noon", "midday", "afternoon", "daytime", "sunny", "daylight", "昼"), "day"),
}
_PLACE_NOUNS = frozenset("""
    campfire ruins forest woods city street streets alley rooftop rooftops roof station temple shrine castle tower
    school classroom beach sea river mountain mountains cave field fields village market bridge desert
    sky alley palace garden lake harbor harbour port ship train battlefield arena room hall library cafe
    park house home kitchen bedroom cliff cliffs valley canyon ocean shore island meadow hill hills lab
    laboratory base spaceship dojo stage lair dungeon throne courtyard plaza square bar tavern inn
    hospital office corridor hallway shop store mall tunnel sewer subway graveyard cemetery swamp jungle
    volcano glacier tundra wasteland village town fortress gate gates wall walls camp clearing grove
    waterfall pier dock docks coast shrine stadium gym rooftops highway road path crossroads factory
    warehouse church cathedral mansion manor attic basement balcony window studio theater theatre
""".split())
_PLACE_PREPS = frozenset({"in", "inside", "at", "on", "across", "through", "near", "under", "beneath", "atop", "by",
                          "within", "outside", "beside", "over", "into", "onto", "among", "along", "around",
                          "above", "below", "behind", "throughout"})
_NAME_PLACE_PREPS = frozenset({"in", "inside", "across", "through", "within", "near", "from", "into",
                               "outside", "throughout", "of"})
_CREATURES = frozenset("""
    dragon demon monster beast wolf fox cat dog bird crow raven tiger serpent snake giant golem titan
    kaiju creature alien vampire zombie ghost spirit witch wizard mage sorcerer knight samurai ninja
    soldier guard king queen prince princess stranger girl boy man woman child robot android cyborg
    mech mecha villain warrior swordsman swordswoman monk priest priestess thief pirate assassin hunter
    elf oni yokai kitsune phoenix griffin bear horse rival enemy hero heroine master teacher student
    captain general emperor empress traveler traveller detective
""".split())
_PLURALS = {"wolves": "wolf", "men": "man", "women": "woman", "children": "child", "thieves": "thief",
            "elves": "elf"}
_TITLES = frozenset("captain lady lord master sensei professor dr mr mrs ms miss sir king queen prince "
                    "princess general doctor uncle aunt grandma grandpa".split())
_STOPWORDS = frozenset("""
    a an the and or but so yet nor for of to in on at by with from into onto over under after before
    during while as when then than once finally suddenly meanwhile later soon now today tonight there
    here this that these those it its he she they them him her his hers their theirs we us our you your
    i me my mine who whom whose what which where why how all both each every some many few most more
    no not none nothing everything everyone someone nobody anyone everybody somebody one two three
    is are was were be been being do does did has have had will would can could should may might must
    shall let lets yes oh ah hey well just only also even still again always never sometimes often
    inside outside above below behind beside near across through around along among without within
    beyond toward towards upon about against between like unlike until since because although though
    if unless whether slowly quickly quietly eventually together alone instead perhaps maybe very
    create make show scene shot sequence clip camera cut fade close wide medium please anime
    chapter episode part act end start beginning ending epilogue prologue interior exterior int ext
    day night morning evening dawn dusk noon midnight sunset sunrise twilight rain snow wind sun moon
    stars sky fire water earth light darkness shadow shadows silence thunder lightning storm fog mist
    meanwhile elsewhere afterwards afterward next first second third last
    le la les un une des du de et il elle ils elles dans sur avec puis quand pendant
    el los las una unos unas y con en luego cuando mientras pero
    der die das ein eine und mit dann als wenn im am
""".split())
_SETTING_STARTS = _PLACE_PREPS | {"after", "before", "while", "as", "when", "once", "if", "during", "until",
                                  "since", "because", "although", "though"}
_SUBJECT_WORDS = frozenset({"the", "a", "an", "his", "her", "their", "its", "he", "she", "they", "it", "we",
                            "i", "you", "my", "our", "your"})
_PRONOUN_SUBJECTS = frozenset({"he", "she", "they"})
# What follows a finite verb whose subject was left out ("..., then draws his sword", "and picks up
# the lantern"): an object's determiner, a particle or a preposition.
_AFTER_ELIDED_VERB = frozenset({"his", "her", "their", "its", "the", "a", "an", "up", "down", "out", "off", "back",
                                "away", "at", "to", "into", "onto", "toward", "towards", "across", "through",
                                "over", "around", "from", "with"})
_NOT_VERBS = frozenset({"is", "was", "has", "as", "his", "its", "this", "us", "thus", "plus", "yes", "towards",
                        "across", "less", "unless", "red", "bed", "seed", "speed", "need", "feed", "shed"})
_PRONOUN_OBJECTS = frozenset({"him", "her", "them"})
_DETERMINERS = "the|a|an|his|her|their|its|my|our|your|one|le|la|les|un|une|el|los|las|una|der|die|das|ein|eine"
_FOREIGN_WORDS = frozenset({"le", "la", "les", "un", "une", "des", "du", "et", "il", "elle", "dans", "sur",
                            "avec", "contre", "se", "el", "los", "las", "una", "y", "con", "contra", "lo", "der",
                            "die", "das", "ein", "eine", "und", "mit", "gegen", "im", "den", "dem", "est", "ist",
                            "es", "sont", "pero", "mais", "puis", "luego", "dann", "sich"})
_ENGLISH = frozenset({"the", "a", "an", "and", "to", "of", "in", "on", "at", "with", "is", "are", "his", "her",
                      "their", "then", "while", "as", "into", "from", "by", "for", "he", "she", "they", "it",
                      "this", "that", "over", "under", "through", "after", "where", "who"})

_BLOW = {"fight": "blow", "battle": "blow", "duel": "blow", "clash": "blow", "brawl": "blow", "combat": "blow",
         "war": "blow", "attack": "attack", "strike": "strike", "slash": "slash", "punch": "punch",
         "kick": "kick", "stab": "thrust", "shoot": "shot", "blast": "blast", "swing": "swing",
         "charge": "charge", "tackle": "tackle", "lunge": "lunge", "slam": "slam", "bite": "bite",
         "claw": "claw", "smash": "smash", "throw": "throw", "hit": "hit"}

# Screen positions by order of appearance: the 180° line is set by the first two characters.
_SIDES = ("screen-left facing right", "screen-right facing left", "centre background",
          "screen-left background", "screen-right background")
_INTENSITY = ("serene", "earnest", "tender", "melancholic", "mysterious", "tense", "frantic", "intense")


# --- public helpers ----------------------------------------------------------------------------

def scene_text(description: str) -> str:
    """The request without "Create a scene where"-style lead-ins."""
    text = _LEADING_PHRASES.sub("", description, count=1).strip(" .!")
    return text or description.strip()


def duration_step(fps: int) -> float:
    """The render grid: the smallest multiple of 0.5 s that is a whole number of frames at ``fps``."""
    return DURATION_STEP_S if (DURATION_STEP_S * fps).is_integer() else 2 * DURATION_STEP_S


def shot_limits(fps: int) -> tuple[float, float]:
    """Shortest and longest shot on the grid: at least 1 s and 2 frames; at most 60 s and 600 frames."""
    step = duration_step(fps)
    shortest = math.ceil(max(MIN_SHOT_S, 2 / fps) / step - 1e-9) * step
    longest = math.floor(min(MAX_SHOT_S, MAX_SHOT_FRAMES / fps) / step + 1e-9) * step
    return shortest, max(shortest, longest)


def snap_duration(seconds: float, fps: int) -> tuple[float, int]:
    """Snap to the render grid (:func:`duration_step`, within :func:`shot_limits`): (seconds, frames)."""
    step = duration_step(fps)
    shortest, longest = shot_limits(fps)
    snapped = min(longest, max(shortest, math.floor(seconds / step + 0.5) * step))
    return snapped, round(snapped * fps)


# --- the plan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Beat:
    """One story beat: a clause of the description and how it is read."""

    text: str
    kind: str  # action | dialogue | reveal | chase | calm
    characters: tuple[str, ...]
    subject: str | None
    other: str | None
    mood: str
    lighting: str
    time: str
    place: str
    where: str = ""  # the place with its preposition: "by the river"
    verb: str = ""
    time_given: bool = False
    place_given: bool = False
    simultaneous: bool = False


@dataclass(frozen=True)
class ScenePlan:
    shots: tuple[ShotSpec, ...]
    overall_mood: str
    lighting_suggestions: str
    genre: str
    notes: tuple[str, ...] = ()
    detected_characters: tuple[str, ...] = ()
    characters: tuple[str, ...] = ()
    beats: tuple[Beat, ...] = ()
    target_duration_s: float | None = None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.shots)


@dataclass(frozen=True)
class _Character:
    name: str
    aliases: tuple[str, ...]  # lower-case surface forms, longest first


@dataclass(frozen=True)
class _Cov:
    """One coverage shot before numbering and timing."""

    beat: int  # -1: the establishing shot
    order: float
    rank: int  # 0 essential; higher ranks are dropped first
    angle: str
    movement: str
    duration: float
    action: str
    characters: tuple[str, ...]
    motion: float
    mood: str
    lighting: str
    note: str = ""


def _tokens(text: str) -> list[str]:
    return [_base_token(m.group()) for m in _WORD.finditer(text)]


def _base_token(word: str) -> str:
    word = word.lower().replace("’", "'")
    return word[:-2] if word.endswith("'s") else word


def _singular(noun: str) -> str:
    if noun in _PLURALS:
        return _PLURALS[noun]
    for suffix in ("es", "s"):
        if noun.endswith(suffix) and noun[: -len(suffix)] in _CREATURES:
            return noun[: -len(suffix)]
    return noun


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _poss(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _join(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class _Reader:
    """Everything the planner reads from one description."""

    def __init__(self, text: str, given: list[str]) -> None:
        self.text = text
        self.quotes: list[str] = []
        self.masked = _QUOTE.sub(self._mask, text)
        letters = [c for c in text if c.isalpha()]
        non_latin = sum(1 for c in letters if ord(c) > 0x24F) / max(1, len(letters))
        tokens = _tokens(self.masked)
        english_hits = sum(1 for t in tokens if t in _ENGLISH or t in _KIND_OF)
        self.english = non_latin < 0.3 and english_hits >= sum(1 for t in tokens if t in _FOREIGN_WORDS)
        self.characters: list[_Character] = []
        seen: set[str] = set()
        for name in given:
            if name.lower() not in seen:
                seen.add(name.lower())
                self.characters.append(_Character(name, (name.lower(),)))
        self.given = len(self.characters)
        self._detect_names(seen)
        self._detect_creatures(seen)
        found = sorted(enumerate(self.characters[self.given:]), key=lambda p: (self._first_mention(p[1]), p[0]))
        self.characters[self.given:] = [c for _, c in found]  # in reading order
        self.truncated_characters = len(self.characters) - self.given > MAX_DETECTED
        self.characters = self.characters[: self.given + MAX_DETECTED]
        # Order of first mention sets the 180° line; unmentioned given characters come last.
        first = {c.name: self._first_mention(c) for c in self.characters}
        self.order = sorted((c.name for c in self.characters), key=lambda n: (first[n], self.names().index(n)))
        self.mentioned_anywhere = any(first[n] < len(self.masked) + 1 for n in first)
        self.display = {name: name for name in self.names()}
        for _, name, shown in self.mentions(self.masked):
            self.display[name] = shown

    def _mask(self, match: re.Match[str]) -> str:
        self.quotes.append(match.group())
        return f"\ue000{len(self.quotes) - 1}\ue001"

    def restore(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.quotes[int(m.group(1))], text)

    def names(self) -> list[str]:
        return [c.name for c in self.characters]

    @property
    def detected(self) -> list[str]:
        return self.names()[self.given:]

    def _known(self, lower: str, seen: set[str]) -> bool:
        return lower in seen or any(lower in c.aliases for c in self.characters)

    def _detect_names(self, seen: set[str]) -> None:
        """Capitalised words that are not sentence starters or common words (runs join: "Captain Aro")."""
        masked = self.masked
        matches = list(_WORD.finditer(masked))
        i = 0
        while i < len(matches):
            match = matches[i]
            word = match.group()
            base = _base_token(word)
            if not word[0].isupper() or (base in _STOPWORDS and base not in _TITLES) or base in _KIND_OF:
                i += 1
                continue
            run = [match]
            while (i + len(run) < len(matches) and masked[run[-1].end():matches[i + len(run)].start()] == " "
                   and not run[-1].group().lower().endswith(("'s", "’s"))):
                following = matches[i + len(run)].group()
                if not following[0].isupper() or _base_token(following) in _STOPWORDS:
                    break
                run.append(matches[i + len(run)])
            i += len(run)
            before = masked[: match.start()].rstrip()
            initial = not before or before[-1] in ".!?;:\n\"“「\ue001"
            previous = _tokens(before[-40:])[-2:]
            if previous and (previous[-1] in _NAME_PLACE_PREPS or (
                    len(previous) == 2 and previous[-1] == "the" and previous[-2] in _PLACE_PREPS)):
                continue  # "in Tokyo", "at the Shrine": a place
            if len(run) == 1 and base in _TITLES:
                continue
            if initial and len(run) == 1 and (
                (len(base) > 4 and base.endswith(("ly", "ing", "ed")))
                or re.search(rf"(?<![\w]){re.escape(base)}(?![\w])", masked)  # also written in lower case
                or self._plural_subject(base, matches, i)  # "Birds sing", "Leaves fall"
                or base in _PLACE_NOUNS or base in _TIME_WORDS or base in _MOVING
            ):
                continue
            name = " ".join(_base_token(m.group()) if m is run[-1] else m.group() for m in run)
            name = " ".join(part[:1].upper() + part[1:] for part in name.split())
            if run[-1].group().lower().endswith(("'s", "’s")):
                name = " ".join(m.group() for m in run[:-1]) + (" " if len(run) > 1 else "") + run[-1].group()[:-2]
            if self._known(name.lower(), seen):
                continue
            parts = [p for p in name.lower().split() if p not in _TITLES]
            aliases = tuple(dict.fromkeys([name.lower(), *([parts[-1]] if len(name.split()) > 1 and parts else [])]))
            seen.update(aliases)
            self.characters.append(_Character(name, aliases))

    @staticmethod
    def _plural_subject(base: str, matches: list[re.Match[str]], following: int) -> bool:
        if not base.endswith("s") or base.endswith("ss") or following >= len(matches):
            return False
        verb = matches[following].group()
        return verb.islower() and not verb.endswith(("s", "ed")) and verb not in _PAST and verb not in _STOPWORDS

    def _detect_creatures(self, seen: set[str]) -> None:
        """"the dragon", "a giant wolf", "the soldiers": creature and role nouns after a determiner."""
        pattern = re.compile(rf"\b(?:{_DETERMINERS})\s+(?:([^\W\d_]+)\s+)?([^\W\d_]+)\b", re.IGNORECASE)
        for match in pattern.finditer(self.masked):
            adjective, noun = (match.group(1) or "").lower(), match.group(2).lower()
            singular = _singular(noun)
            if singular not in _CREATURES:
                if adjective and _singular(adjective) in _CREATURES:
                    noun, singular, adjective = adjective, _singular(adjective), ""
                else:
                    continue
            if adjective and (adjective in _STOPWORDS or adjective in _KIND_OF or adjective in _CREATURES):
                adjective = ""
            aliases = tuple(dict.fromkeys(a for a in (f"{adjective} {noun}".strip(), noun) if a))
            if any(self._known(a, seen) for a in aliases) or any(
                    alias == singular or alias.endswith((f" {singular}", f" {noun}"))
                    for c in self.characters for alias in c.aliases):
                continue
            name = " ".join(w.capitalize() for w in aliases[0].split())
            seen.update(aliases)
            self.characters.append(_Character(name, aliases))

    def _first_mention(self, character: _Character) -> int:
        found = [m.start() for m in (self._search(alias, self.masked) for alias in character.aliases) if m]
        return min(found) if found else len(self.masked) + 1

    @staticmethod
    def _search(alias: str, text: str) -> re.Match[str] | None:
        return re.search(rf"(?<![\w]){re.escape(alias)}(?:['’]s)?(?![\w])", text, re.IGNORECASE)

    def mentions(self, clause: str) -> list[tuple[int, str, str]]:
        """(position, name, how the text calls them) of each character the clause names, in order."""
        found = []
        for character in self.characters:
            best = None
            for alias in character.aliases:
                match = self._search(alias, clause)
                if match and (best is None or match.start() < best.start()):
                    best = match
            if best is not None:
                surface = best.group()
                surface = surface[:-2] if surface.lower().endswith(("'s", "’s")) else surface
                display = character.name if surface[:1].isupper() else f"the {surface.lower()}"
                found.append((best.start(), character.name, display))
        return sorted(found)


# --- beats ----------------------------------------------------------------------------------------

_CONNECTOR = re.compile(
    r"(?P<then>,?\s+(?:and\s+)?then\s*,?\s+)"
    r"|(?P<sim>,?\s+(?:while|as|when|whereupon)\s+)"
    r"|(?P<after>,?\s+after\s+)"
    r"|(?P<comma>\s*,\s*(?:and\s+|but\s+)?)"
    r"|(?P<and>\s+(?:and|but)\s+)",
    re.IGNORECASE,
)


def _classify(masked: str, english: bool) -> tuple[str, str]:
    """(kind, verb base) of a clause: quotes are dialogue; else the first kind word; else calm."""
    tokens = _tokens(masked)
    for index, token in enumerate(tokens):
        if token in _KIND_OF:
            if index >= 2 and tokens[index - 2] in ("after", "before") and tokens[index - 1] in ("the", "a", "an"):
                continue  # "after the battle": a past event, not this beat's action
            kind, base = _KIND_OF[token]
            if "\ue000" in masked and kind != "dialogue":
                return "dialogue", "say"
            return kind, base
    if "\ue000" in masked:
        return "dialogue", "say"
    if not english:
        lower = f" {masked.lower()} "
        for kind, words in _FOREIGN:
            if any(w in lower for w in words):
                return kind, ""
    return "calm", ""


class _Splitter:
    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        aliases = {a for c in reader.characters for a in c.aliases}
        self.subject_starts = _SUBJECT_WORDS | aliases | {a.split()[0] for a in aliases if a.split()}

    def words(self, text: str) -> list[str]:
        return _tokens(text)

    def has_kind_word(self, text: str) -> bool:
        return "\ue000" in text or any(t in _KIND_OF for t in self.words(text))

    def starts_subject(self, text: str) -> bool:
        match = _WORD.search(text)
        if not match or text[: match.start()].strip():
            return False
        word = match.group()
        return _base_token(word) in self.subject_starts or (word[0].isupper() and _base_token(word) not in _STOPWORDS)

    def verbish(self, text: str) -> bool:
        if self.has_kind_word(text):
            return True
        return any(t not in _STOPWORDS and len(t) > 3 and (t.endswith(("s", "ed")) and not t.endswith("ss"))
                   and t not in _PLACE_NOUNS for t in self.words(text)) or any(t in _MOVING for t in self.words(text))

    def is_clause(self, text: str) -> bool:
        words = self.words(text)
        return len(words) >= 2 and words[0] not in _SETTING_STARTS and self.verbish(text)

    def split(self, sentence: str) -> list[tuple[str, bool]]:
        """Clauses of one (masked) sentence, in story order: (clause, simultaneous with the previous)."""
        matches = list(_CONNECTOR.finditer(sentence))
        pieces: list[tuple[str, str]] = []  # (connector kind that starts the piece, text)
        start, kind = 0, ""
        for index, match in enumerate(matches):
            left = sentence[start: match.start()]
            end = matches[index + 1].start() if index + 1 < len(matches) else len(sentence)
            right = sentence[match.end(): end]
            connector = match.lastgroup or ""
            if self._splits(connector, left, right, sentence[match.end():], match.group().strip(" ,").lower()):
                pieces.append((kind, left))
                start, kind = match.end(), connector
        pieces.append((kind, sentence[start:]))
        clauses: list[tuple[str, bool]] = []
        for connector, piece in pieces:
            piece = re.sub(r"^\s*(?:and\s+|but\s+|so\s+)?(?:then\b)?[\s,]*", "", piece, flags=re.IGNORECASE)
            piece = piece.strip(" ,;:.!?。！？")
            if connector == "after" and clauses:
                previous, simultaneous = clauses.pop()
                clauses.extend([(piece, False), (previous, simultaneous)])
            else:
                clauses.append((piece, connector == "sim"))
        return [c for c in clauses if c[0]]

    def _splits(self, connector: str, left: str, right: str, rest: str, word: str) -> bool:
        left_words, right_words = self.words(left), self.words(right)
        if len(left_words) < 2 and "\ue000" not in left:
            return False
        if connector == "then":
            return bool(right_words) or "\ue000" in right
        if connector == "sim":
            if word == "as" and "as" in left_words[-3:]:
                return False  # "as fast as he can"
            return self.starts_subject(rest) and len(right_words) >= 2 and (
                len(right_words) >= 3 or self.verbish(right))
        if connector == "after":
            return self.starts_subject(rest) and (len(right_words) >= 3 or self.has_kind_word(right)) and any(
                t in _PRONOUN_SUBJECTS or self.reader.mentions(right) for t in right_words[:1] + ["_"])
        if connector == "comma":
            if not self.is_clause(left) and "\ue000" not in left:
                return False
            return self.has_kind_word(right) or (self.starts_subject(rest) and len(right_words) >= 3
                                                 and self.verbish(right))
        if connector == "and":
            first = right_words[0] if right_words else ""
            return self.is_clause(left) and (first in _KIND_OF or self.starts_subject(rest)) and self.has_kind_word(
                right) and (
                _classify(right, True)[0] != _classify(left, True)[0])
        return False


def _sentences(masked: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|(?<=[。！？])|\n+", masked)
    return [p.strip() for p in parts if p and p.strip(" .!?。！？\n")]


def _mood(kind: str, tokens: set[str]) -> str:
    sad, tender, conflict, eerie = tokens & _SAD, tokens & _TENDER, tokens & _CONFLICT, tokens & _EERIE
    if kind == "action":
        return "intense"
    if kind == "chase":
        return "frantic"
    if kind == "reveal":
        return "melancholic" if sad else "mysterious"
    if kind == "dialogue":
        return "tense" if conflict else "melancholic" if sad else "tender" if tender else "earnest"
    return "melancholic" if sad else "mysterious" if eerie else "tender" if tender else "serene"


def _lighting(kind: str, mood: str, time: str, timed: bool, tokens: set[str]) -> str:
    if kind in ("action", "chase"):
        return "dramatic shadows"
    if tokens & _NEON:
        return "neon glow"
    if tokens & _FIRE:
        return "flickering firelight"
    if timed:
        return {"night": "low-key moonlight", "dusk": "golden hour", "dawn": "cold dawn light"}.get(
            time, "bright daylight")
    if mood == "mysterious":
        return "low-key moonlight" if kind != "reveal" else "dramatic shadows"
    if kind == "dialogue" or mood in ("melancholic", "tender"):
        return "soft warm backlight"
    return "golden hour"


def _find_time(tokens: list[str], raw: str) -> str | None:
    for token in tokens:
        if token in _TIME_WORDS:
            return _TIME_WORDS[token]
    for word, time in _TIME_WORDS.items():
        if not word.isascii() and word in raw:
            return time
    return None


def _find_place(masked: str, reader: _Reader) -> tuple[str, str] | None:
    """ "in the ancient ruins" -> ("in", "the ancient ruins"); "in Kyoto" -> ("in", "Kyoto") (first found)."""
    matches = list(_WORD.finditer(masked))
    names = {a for c in reader.characters for a in c.aliases}
    for index, match in enumerate(matches):
        word = _base_token(match.group())
        if word not in _PLACE_PREPS:
            continue
        following = matches[index + 1: index + 6]
        if not following or masked[match.end(): following[0].start()].strip():
            continue
        if word in _NAME_PLACE_PREPS | {"at"} and following[0].group()[0].isupper() and (
                following[0].group().lower() not in names and _base_token(following[0].group()) not in _STOPWORDS):
            run = [following[0]]
            for nxt in following[1:]:
                if masked[run[-1].end(): nxt.start()] != " " or not nxt.group()[0].isupper():
                    break
                run.append(nxt)
            return word, masked[run[0].start(): run[-1].end()]
        for offset, candidate in enumerate(following):
            lower = _base_token(candidate.group())
            between = masked[following[0].start(): candidate.start()]
            if any(ch in between for ch in ",;.\ue000") or lower in _KIND_OF or lower in names:
                break
            if lower in _PLACE_NOUNS:
                last = candidate
                for nxt in following[offset + 1:]:
                    if masked[last.end(): nxt.start()] != " " or _base_token(nxt.group()) not in _PLACE_NOUNS:
                        break
                    last = nxt
                if offset == 0:
                    return word, "the " + masked[candidate.start(): last.end()].lower()
                return word, masked[following[0].start(): last.end()]
            if offset >= 3:
                break
    return None


def _elided_subject(tokens: list[str]) -> bool:
    """Whether a clause starts with a finite verb whose subject was left out ("draws his sword",
    "pulled out a map"): English leaves the subject of a coordinated clause to the one before."""
    if len(tokens) < 2 or tokens[0] in _NOT_VERBS:
        return False
    return tokens[0].endswith(("s", "ed")) and tokens[1] in _AFTER_ELIDED_VERB


def _read_beats(reader: _Reader) -> tuple[list[Beat], int]:
    splitter = _Splitter(reader)
    clauses = [(c, sim, number) for number, sentence in enumerate(_sentences(reader.masked))
               for c, sim in splitter.split(sentence)]
    merged: list[tuple[str, bool, int]] = []
    pending = ""
    for clause, simultaneous, number in clauses:
        if len(_tokens(clause)) < 2 and reader.english and not set(_tokens(clause)) & _KIND_OF.keys():
            pending = f"{pending} {clause}".strip()
            continue
        merged.append((f"{pending}, {clause}" if pending else clause, simultaneous, number))
        pending = ""
    if pending:
        if merged:
            last, simultaneous, number = merged.pop()
            merged.append((f"{last}, {pending}", simultaneous, number))
        else:
            merged.append((pending, False, 0))
    total = len(merged)
    merged = merged[:MAX_BEATS]

    found_times = [_find_time(_tokens(c), c) for c, _, _ in merged]
    found_places = [_find_place(c, reader) for c, _, _ in merged]
    time = next((t for t in found_times if t), None)
    place = next((p for p in found_places if p), None)
    beats: list[Beat] = []
    previous_subject: str | None = None
    previous_group: list[str] = []
    history: list[str] = []
    previous_beat: Beat | None = None
    for (clause, simultaneous, _), found_time, found_place in zip(merged, found_times, found_places, strict=True):
        time, place = found_time or time, found_place or place
        tokens = _tokens(clause)
        kind, verb = _classify(clause, reader.english)
        mentions = reader.mentions(clause)
        named = list(dict.fromkeys(name for _, name, _ in mentions))
        first = tokens[0] if tokens else ""
        subject_first = mentions and mentions[0][0] == min(
            (m.start() for m in _WORD.finditer(clause)), default=0)
        inherited: list[str] = []
        elided = not subject_first and _elided_subject(tokens)
        if previous_subject and not subject_first and (first in _PRONOUN_SUBJECTS or first in _KIND_OF
                                                       or first in _MOVING or elided or not named
                                                       and set(tokens) & _PRONOUN_SUBJECTS):
            inherited = list(previous_group) if first == "they" and len(previous_group) > 1 else [previous_subject]
        characters = list(dict.fromkeys([*inherited, *named]))
        if len(characters) == 1 and set(tokens) & _PRONOUN_OBJECTS:
            other = next((c for c in [*reversed(history), *reader.order] if c != characters[0]), None)
            if other:
                characters.append(other)
        if not characters and not reader.mentioned_anywhere:
            characters = list(reader.order)
        subject = characters[0] if characters else None
        other = next((c for c in characters[1:] if c not in inherited), None) or (
            characters[1] if len(characters) > 1 else None)
        if kind == "reveal" and verb in _ENTRANCE and subject:
            observer = next((c for c in reversed(history) if c != subject), None)
            other = observer
        token_set = set(tokens)
        mood = _mood(kind, token_set)
        timed = time is not None
        lighting = _lighting(kind, mood, time or DEFAULT_TIME, timed, token_set)
        if kind == "calm" and previous_beat and (previous_beat.kind in ("action", "chase")
                                                 or previous_beat.mood == "tense"):
            mood, lighting = "tense", previous_beat.lighting  # the fight (or the quarrel) is still on
        if inherited and (first in _KIND_OF or first in _MOVING or elided) and subject:
            clause = f"{reader.display.get(subject, subject)} {clause}"  # "attacks her" -> "Aro attacks her"
        beats.append(Beat(
            text=reader.restore(clause), kind=kind, characters=tuple(characters), subject=subject, other=other,
            mood=mood, lighting=lighting, time=time or DEFAULT_TIME, place=place[1] if place else DEFAULT_PLACE,
            where=" ".join(place) if place else f"in {DEFAULT_PLACE}", verb=verb,
            time_given=timed, place_given=place is not None, simultaneous=simultaneous,
        ))
        previous_beat = beats[-1]
        if subject:
            previous_subject, previous_group = subject, characters
        history.extend(c for c in characters if c)
    # A calm clause leading into an action in the same sentence is the build-up: tense.
    for index in range(len(beats) - 1):
        here, after = beats[index], beats[index + 1]
        if here.kind == "calm" and after.kind in ("action", "chase") and merged[index][2] == merged[index + 1][2]:
            beats[index] = _replace(here, mood="tense", lighting=after.lighting)
    return beats, total


# --- coverage -----------------------------------------------------------------------------------

def _quote(text: str) -> str | None:
    match = _QUOTE.search(text)
    return match.group() if match else None


def _after_verb(text: str, verb: str) -> str:
    """The words after the clause's verb ("Kai finds a hidden door" -> "a hidden door")."""
    for match in _WORD.finditer(text):
        if _KIND_OF.get(_base_token(match.group()), ("", ""))[1] == verb:
            rest = text[match.end():].strip(" ,;:")
            return " ".join(rest.split()[:8])
    return ""


def _coverage(index: int, beat: Beat, display: dict[str, str], sides: dict[str, str], first: bool,
              place_changed: bool) -> list[_Cov]:
    """The shots that cover one beat, each with its order in the beat and its priority."""
    a, b = beat.subject, beat.other
    name_a = display.get(a, a) if a else "the hero"
    name_b = display.get(b, b) if b else None
    clause = _cap(beat.text)
    both = tuple(c for c in (a, b) if c)
    covs: list[_Cov] = []

    def add(order: float, rank: int, angle: str, movement: str, duration: float, action: str,
            characters: Iterable[str | None], motion: float, note: str = "") -> None:
        covs.append(_Cov(index, order, rank, angle, movement, duration, _cap(action),
                         tuple(dict.fromkeys(c for c in characters if c)), motion, beat.mood, beat.lighting, note))

    if place_changed:
        add(-1, 1, "wide", "slow pan", 2.0, f"Establishing: {beat.place}", beat.characters, 0.2, "new place")
    if beat.kind == "action":
        verb = beat.verb or "fight"
        blow = _BLOW.get(verb, "blow")
        if not first:
            add(0, 4, "wide", "tracking", 2.0, f"Wide on the clash: {clause}", beat.characters[:4], 0.7)
        add(1, 0, "medium", "tracking", 2.0, clause, beat.characters[:4], 0.85)
        add(2, 3, "close-up", "handheld", 1.5,
            f"Close on {name_a} mid-{verb}" + (f", eyes on {name_b}" if name_b else ""), (a,), 0.8)
        add(3, 1, "low-angle", "handheld", 1.0,
            f"Impact: {_poss(name_a)} {blow} " + (f"hits {name_b}" if name_b else "lands"), both, 1.0)
        add(4, 2, "close-up", "static", 1.5,
            f"{name_b} reels from the {blow}" if name_b else f"{name_a} recovers, breathing hard", (b or a,), 0.4)
    elif beat.kind == "dialogue":
        quote = _quote(beat.text)
        if b:
            add(1, 0, "two-shot", "static", 2.5, f"Two-shot: {beat.text}", both, 0.15)
            add(2, 1, "over-the-shoulder", "static", 2.0,
                f"Over {_poss(name_b)} shoulder on {name_a}, speaking" + (f": {quote}" if quote else ""), both, 0.15,
                f"camera behind {b}, eyelines matched")
            add(3, 1, "over-the-shoulder", "static", 2.0, f"Reverse over {_poss(name_a)} shoulder on {name_b}, listening",
                both, 0.1, f"reverse angle behind {a}, same side of the line")
            add(4, 2, "close-up", "slow push-in", 1.5, f"Close on {name_b} reacting to {_poss(name_a)} words", (b,), 0.1)
        else:
            add(1, 0, "medium", "static", 2.5, clause, beat.characters, 0.15)
            add(2, 2, "close-up", "slow push-in", 1.5, f"Close on {name_a} as the words land", (a,), 0.1)
    elif beat.kind == "reveal":
        if beat.verb in _ENTRANCE or not a:
            add(1, 0, "medium", "slow push-in", 2.5, f"Reveal: {beat.text}", (a,), 0.3)
            if b:
                add(2, 2, "close-up", "static", 1.5, f"Close on {name_b} as {name_a} appears", (b,), 0.1)
            elif a:
                add(2, 2, "close-up", "slow push-in", 1.5, f"Close on {name_a}", (a,), 0.15)
        else:
            revealed = name_b or _after_verb(beat.text, beat.verb) or "what lies ahead"
            add(0, 1, "close-up", "static", 1.5, f"Close on {name_a} noticing something", (a,), 0.1)
            add(1, 0, "wide" if not b else "medium", "slow push-in", 2.5, f"Reveal: slow push-in on {revealed}",
                (b,) if b else (a,), 0.3, f"{a}'s eyeline")
            add(2, 2, "close-up", "static", 1.5, f"{name_a} reacts", (a,), 0.1)
    elif beat.kind == "chase":
        if a:
            # The pursuer stays behind: moving away from their side of the frame.
            direction = "right to left" if sides.get(a, "").startswith("screen-right") else "left to right"
            add(0, 0, "wide", "tracking", 2.0, clause, beat.characters[:4], 0.85, f"{a} moving {direction} across cuts")
            fleeing = beat.verb in ("flee", "escape", "run")
            if fleeing and name_b:
                pov = f"{_poss(name_a)} POV, looking back: {name_b} closing in"
                last, last_in = f"{name_a} glances back at {name_b}, still running", a
            else:
                pov = f"{_poss(name_a)} POV: {name_b} ahead" if name_b else (
                    f"{_poss(name_a)} POV, rushing through {beat.place}")
                last = f"{name_b} glances back, still running" if name_b else f"{name_a} runs, breathing hard"
                last_in = b or a
            add(1, 1, "pov", "handheld", 1.5, pov, (b,), 0.9, f"{a}'s eyeline, {direction}")
            add(2, 2, "medium", "tracking", 1.5, last, (last_in,), 0.85, f"moving {direction}")
        else:
            add(0, 0, "wide", "tracking", 2.0, clause, (), 0.85)
            add(1, 1, "pov", "handheld", 1.5, f"POV, rushing through {beat.place}", (), 0.9)
    else:
        moving = any(t in _MOVING for t in _tokens(beat.text))
        if not beat.characters:
            if not first:
                add(1, 0, "wide", "slow pan", 2.5, clause, (), 0.2)
            add(2, 2, "close-up", "slow pan", 2.0, f"Detail: {beat.text}", (), 0.15)
        else:
            add(1, 0, "medium", "tracking" if moving else "static", 2.5, clause, beat.characters[:4],
                0.35 if moving else 0.15)
            expression = {"melancholic": "eyes downcast", "mysterious": "eyes searching the dark",
                          "tender": "a soft smile", "tense": "jaw set"}.get(beat.mood, "a quiet moment")
            add(2, 2, "close-up", "slow push-in", 2.0, f"Close on {name_a}, {expression}", (a,), 0.1)
    # Extra coverage, used only when a target duration asks for more screen time.
    if beat.kind == "action":
        add(1.5, 5, "extreme close-up", "static", 1.0, f"Extreme close-up: {_poss(name_a)} eyes", (a,), 0.3)
        add(5, 6, "high-angle", "slow pan", 2.0, f"High angle over the fight: {clause}", beat.characters[:4], 0.6)
    elif beat.kind == "dialogue":
        add(3.5, 5, "medium", "static", 2.0, f"Medium on {name_b or name_a}, listening", (b or a,), 0.1)
        add(5, 6, "extreme close-up", "static", 1.5, f"Extreme close-up: {_poss(name_a)} eyes", (a,), 0.05)
    elif beat.kind == "reveal":
        add(1.5, 5, "extreme close-up", "slow push-in", 1.5, f"Extreme close-up: {beat.text}", (b or a,), 0.1)
        add(5, 6, "high-angle", "static", 2.0, f"High angle: {name_a} before what was revealed", (a,), 0.15)
    elif beat.kind == "chase":
        add(1.5, 5, "low-angle", "tracking", 1.5, f"Low angle, feet pounding {beat.place}", beat.characters[:4], 0.9)
        add(5, 6, "high-angle", "tracking", 2.0, f"High angle: the chase across {beat.place}", beat.characters[:4],
            0.8)
    else:
        add(0.5, 5, "wide", "slow pan", 2.5, f"Wide: {beat.text}", beat.characters[:4], 0.2)
        add(5, 6, "extreme close-up", "static", 1.5, f"Detail: {beat.text}", (), 0.1)
    if beat.simultaneous:
        covs = [c if c.note else _replace(c, note="at the same moment as the previous beat (intercut)") for c in covs]
    return covs


def _establishing(beats: list[Beat]) -> _Cov:
    first = beats[0]
    charged = first.kind in ("action", "chase")
    mood = "tense" if charged else first.mood
    lighting = first.lighting
    if first.time_given and charged:
        lighting = _lighting("calm", mood, first.time, True, set(_tokens(first.text)))
    return _Cov(-1, 0, -1, "wide", "slow pan", 3.0, "", first.characters, 0.25 if charged else 0.2, mood, lighting)


def _establishing_action(cov: _Cov, beats: list[Beat], display: dict[str, str]) -> str:
    first = beats[0]
    if not cov.characters:
        if first.kind == "calm" and not first.characters:
            return f"Establishing: {first.text}"
        return f"Establishing: {first.place}"
    names = _join(display.get(c, c) for c in cov.characters)
    verb = " face off" if first.kind == "action" and len(cov.characters) > 1 else ""
    prep, _, place = first.where.partition(" ")
    if prep in ("through", "across", "into", "along", "around", "throughout", "among", "over", "onto"):
        prep = "on" if place.endswith(("rooftops", "roof", "bridge", "street", "streets", "road")) else "in"
    return _cap(f"establishing: {names}{verb} {prep} {place}")


def _fit(durations: list[float], target: float, fps: int) -> tuple[list[float], bool]:
    """Durations on the grid, each within the shot limits, summing to ``target`` (±half a step).

    Returns (durations, whether the target was reachable)."""
    step = duration_step(fps)
    shortest, longest = shot_limits(fps)
    low, high = round(shortest / step), round(longest / step)
    wanted = max(1, math.floor(target / step + 0.5))
    total = sum(durations)
    ideal = [d * wanted / total for d in durations]
    units = [min(high, max(low, math.floor(x))) for x in ideal]
    diff = wanted - sum(units)
    while diff:
        if diff > 0:
            candidates = [i for i, u in enumerate(units) if u < high]
            if not candidates:
                break
            pick = max(candidates, key=lambda i: (ideal[i] - units[i], -i))
            units[pick] += 1
            diff -= 1
        else:
            candidates = [i for i, u in enumerate(units) if u > low]
            if not candidates:
                break
            pick = max(candidates, key=lambda i: (units[i] - ideal[i], -i))
            units[pick] -= 1
            diff += 1
    return [u * step for u in units], diff == 0


def _sides(order: list[str]) -> dict[str, str]:
    """Where each character stands, by order of appearance: the first two set the 180° line."""
    return {name: _SIDES[min(i, len(_SIDES) - 1)] for i, name in enumerate(order)}


def _continuity(cov: _Cov, beat: Beat, order: list[str], number: int) -> str:
    side = _sides(order)
    in_frame = [c for c in order if c in cov.characters]
    parts = []
    if in_frame:
        parts.append(("sets the 180° line: " if number == 1 else "180° line: ")
                     + ", ".join(f"{c} {side[c]}" for c in in_frame))
    else:
        parts.append("no characters in frame" if number == 1 else "keep the 180° line of shot 1")
    parts.append(f"time: {beat.time}" + ("" if beat.time_given else " (assumed)"))
    parts.append(f"place: {beat.place}" + ("" if beat.place_given else " (assumed)"))
    if cov.note:
        parts.append(cov.note)
    parts.append("sets palette and character designs" if number == 1 else "match designs and palette of shot 1")
    return "; ".join(parts)


def _genre(beat: Beat) -> str:
    if beat.kind in ("action", "chase"):
        return "action"
    if beat.kind == "reveal" or beat.mood == "mysterious":
        return "mystery"
    if beat.kind == "dialogue" or beat.mood in ("melancholic", "tender"):
        return "emotional"
    return "calm"


def plan_scene(request: SceneRequested, *, fps: int) -> ScenePlan:
    """Plan the scene into shots (see the module docstring). Raises ValueError for a blank description."""
    if not request.description or not request.description.strip():
        raise ValueError("the scene description is blank: say what happens, e.g. 'Kai fights the dragon'")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    text = scene_text(request.description)
    reader = _Reader(text, list(request.characters))
    beats, total_beats = _read_beats(reader)
    if not beats:
        beats = [Beat(text=text, kind="calm", characters=tuple(reader.order), subject=None, other=None,
                      mood="serene", lighting="golden hour", time=DEFAULT_TIME, place=DEFAULT_PLACE)]
    display = reader.display
    target = getattr(request, "target_duration_s", None)
    notes: list[str] = []
    if not reader.english:
        notes.append("the description does not look like English: generic coverage, one beat per sentence")
    if reader.detected:
        notes.append(f"characters found in the description (not in the request): {', '.join(reader.detected)}")
    if reader.truncated_characters:
        notes.append(f"more than {MAX_DETECTED} characters found; the first {MAX_DETECTED} are used")
    if total_beats > MAX_BEATS:
        notes.append(f"the description has {total_beats} beats; the plan covers the first {MAX_BEATS}")

    # Coverage, by priority: the establishing shot, each beat's essential shot, then the rest.
    sides = _sides(reader.order)
    opening = _establishing(beats)
    covs = [opening, _replace(opening, order=1, rank=EXTRA_RANK, angle="high-angle", duration=2.5, characters=(),
                              action=f"High angle over {beats[0].place}", motion=0.15)]
    for index, beat in enumerate(beats):
        changed = index > 0 and beat.place != beats[index - 1].place
        covs.extend(_coverage(index, beat, display, sides, index == 0, changed))
    essential = [c for c in covs if c.rank <= 0]
    optional = sorted((c for c in covs if 0 < c.rank < EXTRA_RANK), key=lambda c: (c.rank, c.beat, c.order))
    extra = sorted((c for c in covs if c.rank >= EXTRA_RANK), key=lambda c: (c.rank, c.beat, c.order))
    room = max(0, MAX_SHOTS - len(essential))
    if len(optional) > room and target is None:
        notes.append(f"coverage trimmed to {MAX_SHOTS} shots ({len(optional) - room} more were possible)")
    chosen = essential[:MAX_SHOTS] + optional[:room]
    spare = optional[room:] + extra

    step = duration_step(fps)
    shortest, longest = shot_limits(fps)
    if target is not None:
        units = max(1, math.floor(target / step + 0.5))
        most = max(1, units // round(shortest / step))
        if most < len(chosen) and most <= len(beats) and chosen[0].beat == -1:
            chosen.pop(0)  # too short for an establishing shot: the beats come first
        while len(chosen) > most:
            chosen.pop()
        while len(chosen) > 1 and chosen[-1].rank > 0 and sum(c.duration for c in chosen) > 1.6 * target:
            chosen.pop()
        # A long target gets more coverage rather than very long shots.
        while spare and len(chosen) < MAX_SHOTS and (
                target / len(chosen) > COMFORTABLE_SHOT_S or len(chosen) * longest < target):
            chosen.append(spare.pop(0))
        repeats = [c for c in chosen if c.beat >= 0]
        while repeats and len(chosen) < MAX_SHOTS and len(chosen) * longest < target:
            again = repeats[(len(chosen) - 1) % len(repeats)]  # as a last resort, hold a shot longer
            chosen.append(_replace(again, order=again.order + 0.01 * len(chosen), rank=EXTRA_RANK + 2,
                                   action=f"{again.action} (continued)"))
        covered = {c.beat for c in chosen}
        if len(covered - {-1}) < len(beats):
            notes.append(f"target {target:g} s is too short to show every beat: "
                         f"{len(beats) - len(covered - {-1})} beat(s) left out")
    chosen.sort(key=lambda c: (c.beat, c.order))

    # Every character is seen: those in no shot join the establishing shot.
    seen = {name for c in chosen for name in c.characters}
    missing = [name for name in reader.order if name not in seen]
    if missing:
        first = chosen[0]
        chosen[0] = _replace(first, characters=first.characters + tuple(missing))
        notes.append(f"not seen in any beat, so placed in the establishing shot: {', '.join(missing)}")
    if chosen[0].beat == -1 and chosen[0].order == 0:
        chosen[0] = _replace(chosen[0], action=_establishing_action(chosen[0], beats, display))

    if target is None:
        durations = [snap_duration(c.duration, fps)[0] for c in chosen]
    else:
        durations, reachable = _fit([c.duration for c in chosen], target, fps)
        if not reachable:
            notes.append(f"target {target:g} s cannot be met with {len(chosen)} shot(s) of "
                         f"{shortest:g}-{shot_limits(fps)[1]:g} s; the plan runs {sum(durations):g} s")
        else:
            notes.append(f"target {target:g} s: {sum(durations):g} s over {len(chosen)} shot(s)")
    if not any(b.time_given for b in beats):
        notes.append(f"no time of day in the description: assumed {DEFAULT_TIME}")
    if not any(b.place_given for b in beats):
        notes.append(f"no place in the description: assumed {DEFAULT_PLACE}")

    # One palette for the whole scene, set by its opening: shots cut together must match.
    palette = PALETTES.get(beats[0].time, PALETTES[DEFAULT_TIME])
    shots = []
    for number, (cov, duration) in enumerate(zip(chosen, durations, strict=True), start=1):
        beat = beats[max(0, cov.beat)]
        shots.append(ShotSpec(
            shot_number=number,
            shot_count=len(chosen),
            camera_angle=cov.angle,
            camera_movement=cov.movement,
            duration=duration,
            fps=fps,
            frame_count=round(duration * fps),
            characters=list(cov.characters),
            mood=cov.mood,
            lighting=cov.lighting,
            action=cov.action,
            description=f"beat {max(0, cov.beat) + 1}/{len(beats)} ({beat.kind}): {beat.text}",
            continuity_notes=_continuity(cov, beat, reader.order, number),
            setting=beat.place,
            time_of_day=beat.time,
            palette=palette,
            expected_motion=cov.motion,
        ))

    overall = max((s.mood for s in shots), key=_INTENSITY.index)
    climax = next(b for b in beats if b.mood == overall) if any(b.mood == overall for b in beats) else beats[0]
    lightings = list(dict.fromkeys(s.lighting for s in shots))
    suggestion = " → ".join(lightings)
    if beats[0].time_given:
        suggestion += f" ({beats[0].time})"
    return ScenePlan(
        shots=tuple(shots),
        overall_mood=overall,
        lighting_suggestions=suggestion,
        genre=_genre(climax),
        notes=tuple(notes),
        detected_characters=tuple(reader.detected),
        characters=tuple(reader.order),
        beats=tuple(beats),
        target_duration_s=target,
    )
