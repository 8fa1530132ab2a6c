"""Reading a scene description into beats: sentences and clauses, who acts, what kind of beat each
is (action, dialogue, reveal, chase, calm), its mood, light, time of day and place. The words it
knows are :mod:`director.lexicon`; :mod:`director.planner` covers the beats with shots.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import replace as _replace

from director.lexicon import (
    AFTER_ELIDED_VERB,
    CONFLICT,
    CREATURES,
    DEFAULT_PLACE,
    DEFAULT_TIME,
    DETERMINERS,
    EERIE,
    ENGLISH,
    ENTRANCE,
    FIRE,
    FOREIGN,
    FOREIGN_WORDS,
    KIND_OF,
    MOVING,
    NAME_PLACE_PREPS,
    NEON,
    NOT_VERBS,
    PAST,
    PLACE_NOUNS,
    PLACE_PREPS,
    PLURALS,
    PRONOUN_OBJECTS,
    PRONOUN_SUBJECTS,
    SAD,
    SETTING_STARTS,
    STOPWORDS,
    SUBJECT_WORDS,
    TENDER,
    TIME_WORDS,
    TITLES,
)

MAX_BEATS = 8
MAX_DETECTED = 8

LEADING_PHRASES = re.compile(
    r"^\s*(please\s+)?(create|make|generate|render|show|draw)\s+(me\s+)?(an?\s+|the\s+)?"
    r"(anime\s+)?(scene|shot|sequence|clip)?\s*(where|in which|of|with|showing)?\s*",
    re.IGNORECASE,
)
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
QUOTE = re.compile(r'"[^"]*"|“[^”]*”|「[^」]*」|『[^』]*』')
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


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
class _Character:
    name: str
    aliases: tuple[str, ...]  # lower-case surface forms, longest first


def words_of(text: str) -> list[str]:
    return [base_word(m.group()) for m in WORD.finditer(text)]


def base_word(word: str) -> str:
    word = word.lower().replace("’", "'")
    return word[:-2] if word.endswith("'s") else word


def _singular(noun: str) -> str:
    if noun in PLURALS:
        return PLURALS[noun]
    for suffix in ("es", "s"):
        if noun.endswith(suffix) and noun[: -len(suffix)] in CREATURES:
            return noun[: -len(suffix)]
    return noun


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def joined_names(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class Reader:
    """Everything the planner reads from one description."""

    def __init__(self, text: str, given: list[str]) -> None:
        self.text = text
        self.quotes: list[str] = []
        self.masked = QUOTE.sub(self._mask, text)
        letters = [c for c in text if c.isalpha()]
        non_latin = sum(1 for c in letters if ord(c) > 0x24F) / max(1, len(letters))
        tokens = words_of(self.masked)
        english_hits = sum(1 for t in tokens if t in ENGLISH or t in KIND_OF)
        self.english = non_latin < 0.3 and english_hits >= sum(1 for t in tokens if t in FOREIGN_WORDS)
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
        matches = list(WORD.finditer(masked))
        i = 0
        while i < len(matches):
            match = matches[i]
            word = match.group()
            base = base_word(word)
            if not word[0].isupper() or (base in STOPWORDS and base not in TITLES) or base in KIND_OF:
                i += 1
                continue
            run = [match]
            while (i + len(run) < len(matches) and masked[run[-1].end():matches[i + len(run)].start()] == " "
                   and not run[-1].group().lower().endswith(("'s", "’s"))):
                following = matches[i + len(run)].group()
                if not following[0].isupper() or base_word(following) in STOPWORDS:
                    break
                run.append(matches[i + len(run)])
            i += len(run)
            before = masked[: match.start()].rstrip()
            initial = not before or before[-1] in ".!?;:\n\"“「\ue001"
            previous = words_of(before[-40:])[-2:]
            if previous and (previous[-1] in NAME_PLACE_PREPS or (
                    len(previous) == 2 and previous[-1] == "the" and previous[-2] in PLACE_PREPS)):
                continue  # "in Tokyo", "at the Shrine": a place
            if len(run) == 1 and base in TITLES:
                continue
            if initial and len(run) == 1 and (
                (len(base) > 4 and base.endswith(("ly", "ing", "ed")))
                or re.search(rf"(?<![\w]){re.escape(base)}(?![\w])", masked)  # also written in lower case
                or self._plural_subject(base, matches, i)  # "Birds sing", "Leaves fall"
                or base in PLACE_NOUNS or base in TIME_WORDS or base in MOVING
            ):
                continue
            name = " ".join(base_word(m.group()) if m is run[-1] else m.group() for m in run)
            name = " ".join(part[:1].upper() + part[1:] for part in name.split())
            if run[-1].group().lower().endswith(("'s", "’s")):
                name = " ".join(m.group() for m in run[:-1]) + (" " if len(run) > 1 else "") + run[-1].group()[:-2]
            if self._known(name.lower(), seen):
                continue
            parts = [p for p in name.lower().split() if p not in TITLES]
            aliases = tuple(dict.fromkeys([name.lower(), *([parts[-1]] if len(name.split()) > 1 and parts else [])]))
            seen.update(aliases)
            self.characters.append(_Character(name, aliases))

    @staticmethod
    def _plural_subject(base: str, matches: list[re.Match[str]], following: int) -> bool:
        if not base.endswith("s") or base.endswith("ss") or following >= len(matches):
            return False
        verb = matches[following].group()
        return verb.islower() and not verb.endswith(("s", "ed")) and verb not in PAST and verb not in STOPWORDS

    def _detect_creatures(self, seen: set[str]) -> None:
        """"the dragon", "a giant wolf", "the soldiers": creature and role nouns after a determiner."""
        pattern = re.compile(rf"\b(?:{DETERMINERS})\s+(?:([^\W\d_]+)\s+)?([^\W\d_]+)\b", re.IGNORECASE)
        for match in pattern.finditer(self.masked):
            adjective, noun = (match.group(1) or "").lower(), match.group(2).lower()
            singular = _singular(noun)
            if singular not in CREATURES:
                if adjective and _singular(adjective) in CREATURES:
                    noun, singular, adjective = adjective, _singular(adjective), ""
                else:
                    continue
            if adjective and (adjective in STOPWORDS or adjective in KIND_OF or adjective in CREATURES):
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
    tokens = words_of(masked)
    for index, token in enumerate(tokens):
        if token in KIND_OF:
            if index >= 2 and tokens[index - 2] in ("after", "before") and tokens[index - 1] in ("the", "a", "an"):
                continue  # "after the battle": a past event, not this beat's action
            kind, base = KIND_OF[token]
            if "\ue000" in masked and kind != "dialogue":
                return "dialogue", "say"
            return kind, base
    if "\ue000" in masked:
        return "dialogue", "say"
    if not english:
        lower = f" {masked.lower()} "
        for kind, words in FOREIGN:
            if any(w in lower for w in words):
                return kind, ""
    return "calm", ""


class _Splitter:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        aliases = {a for c in reader.characters for a in c.aliases}
        self.subject_starts = SUBJECT_WORDS | aliases | {a.split()[0] for a in aliases if a.split()}

    def words(self, text: str) -> list[str]:
        return words_of(text)

    def has_kind_word(self, text: str) -> bool:
        return "\ue000" in text or any(t in KIND_OF for t in self.words(text))

    def starts_subject(self, text: str) -> bool:
        match = WORD.search(text)
        if not match or text[: match.start()].strip():
            return False
        word = match.group()
        return base_word(word) in self.subject_starts or (word[0].isupper() and base_word(word) not in STOPWORDS)

    def verbish(self, text: str) -> bool:
        if self.has_kind_word(text):
            return True
        return any(t not in STOPWORDS and len(t) > 3 and (t.endswith(("s", "ed")) and not t.endswith("ss"))
                   and t not in PLACE_NOUNS for t in self.words(text)) or any(t in MOVING for t in self.words(text))

    def is_clause(self, text: str) -> bool:
        words = self.words(text)
        return len(words) >= 2 and words[0] not in SETTING_STARTS and self.verbish(text)

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
                t in PRONOUN_SUBJECTS or self.reader.mentions(right) for t in right_words[:1] + ["_"])
        if connector == "comma":
            if not self.is_clause(left) and "\ue000" not in left:
                return False
            return self.has_kind_word(right) or (self.starts_subject(rest) and len(right_words) >= 3
                                                 and self.verbish(right))
        if connector == "and":
            first = right_words[0] if right_words else ""
            return self.is_clause(left) and (first in KIND_OF or self.starts_subject(rest)) and self.has_kind_word(
                right) and (
                _classify(right, True)[0] != _classify(left, True)[0])
        return False


def _sentences(masked: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|(?<=[。！？])|\n+", masked)
    return [p.strip() for p in parts if p and p.strip(" .!?。！？\n")]


def _mood(kind: str, tokens: set[str]) -> str:
    sad, tender, conflict, eerie = tokens & SAD, tokens & TENDER, tokens & CONFLICT, tokens & EERIE
    if kind == "action":
        return "intense"
    if kind == "chase":
        return "frantic"
    if kind == "reveal":
        return "melancholic" if sad else "mysterious"
    if kind == "dialogue":
        return "tense" if conflict else "melancholic" if sad else "tender" if tender else "earnest"
    return "melancholic" if sad else "mysterious" if eerie else "tender" if tender else "serene"


def beat_lighting(kind: str, mood: str, time: str, timed: bool, tokens: set[str]) -> str:
    if kind in ("action", "chase"):
        return "dramatic shadows"
    if tokens & NEON:
        return "neon glow"
    if tokens & FIRE:
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
        if token in TIME_WORDS:
            return TIME_WORDS[token]
    for word, time in TIME_WORDS.items():
        if not word.isascii() and word in raw:
            return time
    return None


def _find_place(masked: str, reader: Reader) -> tuple[str, str] | None:
    """ "in the ancient ruins" -> ("in", "the ancient ruins"); "in Kyoto" -> ("in", "Kyoto") (first found)."""
    matches = list(WORD.finditer(masked))
    names = {a for c in reader.characters for a in c.aliases}
    for index, match in enumerate(matches):
        word = base_word(match.group())
        if word not in PLACE_PREPS:
            continue
        following = matches[index + 1: index + 6]
        if not following or masked[match.end(): following[0].start()].strip():
            continue
        if word in NAME_PLACE_PREPS | {"at"} and following[0].group()[0].isupper() and (
                following[0].group().lower() not in names and base_word(following[0].group()) not in STOPWORDS):
            run = [following[0]]
            for nxt in following[1:]:
                if masked[run[-1].end(): nxt.start()] != " " or not nxt.group()[0].isupper():
                    break
                run.append(nxt)
            return word, masked[run[0].start(): run[-1].end()]
        for offset, candidate in enumerate(following):
            lower = base_word(candidate.group())
            between = masked[following[0].start(): candidate.start()]
            if any(ch in between for ch in ",;.\ue000") or lower in KIND_OF or lower in names:
                break
            if lower in PLACE_NOUNS:
                last = candidate
                for nxt in following[offset + 1:]:
                    if masked[last.end(): nxt.start()] != " " or base_word(nxt.group()) not in PLACE_NOUNS:
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
    if len(tokens) < 2 or tokens[0] in NOT_VERBS:
        return False
    return tokens[0].endswith(("s", "ed")) and tokens[1] in AFTER_ELIDED_VERB


def read_beats(reader: Reader) -> tuple[list[Beat], int]:
    splitter = _Splitter(reader)
    clauses = [(c, sim, number) for number, sentence in enumerate(_sentences(reader.masked))
               for c, sim in splitter.split(sentence)]
    merged: list[tuple[str, bool, int]] = []
    pending = ""
    for clause, simultaneous, number in clauses:
        if len(words_of(clause)) < 2 and reader.english and not set(words_of(clause)) & KIND_OF.keys():
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

    found_times = [_find_time(words_of(c), c) for c, _, _ in merged]
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
        tokens = words_of(clause)
        kind, verb = _classify(clause, reader.english)
        mentions = reader.mentions(clause)
        named = list(dict.fromkeys(name for _, name, _ in mentions))
        first = tokens[0] if tokens else ""
        subject_first = mentions and mentions[0][0] == min(
            (m.start() for m in WORD.finditer(clause)), default=0)
        inherited: list[str] = []
        elided = not subject_first and _elided_subject(tokens)
        if previous_subject and not subject_first and (first in PRONOUN_SUBJECTS or first in KIND_OF
                                                       or first in MOVING or elided or not named
                                                       and set(tokens) & PRONOUN_SUBJECTS):
            inherited = list(previous_group) if first == "they" and len(previous_group) > 1 else [previous_subject]
        characters = list(dict.fromkeys([*inherited, *named]))
        if len(characters) == 1 and set(tokens) & PRONOUN_OBJECTS:
            other = next((c for c in [*reversed(history), *reader.order] if c != characters[0]), None)
            if other:
                characters.append(other)
        if not characters and not reader.mentioned_anywhere:
            characters = list(reader.order)
        subject = characters[0] if characters else None
        other = next((c for c in characters[1:] if c not in inherited), None) or (
            characters[1] if len(characters) > 1 else None)
        if kind == "reveal" and verb in ENTRANCE and subject:
            observer = next((c for c in reversed(history) if c != subject), None)
            other = observer
        token_set = set(tokens)
        mood = _mood(kind, token_set)
        timed = time is not None
        lighting = beat_lighting(kind, mood, time or DEFAULT_TIME, timed, token_set)
        if kind == "calm" and previous_beat and (previous_beat.kind in ("action", "chase")
                                                 or previous_beat.mood == "tense"):
            mood, lighting = "tense", previous_beat.lighting  # the fight (or the quarrel) is still on
        if inherited and (first in KIND_OF or first in MOVING or elided) and subject:
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


