"""The planner's vocabulary, as data: which words mean which kind of action, mood, light, time of
day, place and creature, and the few phrases it knows in other languages. :mod:`director.clauses`
reads descriptions with it; :mod:`director.planner` turns what was read into shots."""

from __future__ import annotations

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
KIND_OF: dict[str, tuple[str, str]] = {
    form: (kind, base) for kind, forms in _KIND_WORDS.items() for form, base in forms.items()
}
PAST = frozenset({form for form, (_, base) in KIND_OF.items() if form != base and not form.endswith(
    ("s", "ing", "ed", "d"))} | {"was", "had", "did", "went", "came", "saw", "got", "left", "stood", "sat", "fell",
                                 "rose", "knew", "thought", "felt", "made", "took", "gave", "held", "kept", "met"})
ENTRANCE = frozenset({"appear", "emerge", "arrive", "materialize", "materialise"})
MOVING = frozenset(_forms("walk", "stroll", "wander", "travel", "ride", "fly", "climb", "swim", "drive",
                           "sail", "float", "drift", "march", "hike", "wade")) | {
    "flew", "flown", "rode", "ridden", "swam", "drove", "driven"}
# Non-English words (substrings of the lower-cased text), used only when the text is not English.
FOREIGN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dialogue", ("「", "話", "言う", "言った", "叫", " parle", " dit ", " habla", " dice ", " sagt ",
                  " spricht")),
    ("action", ("戦", "闘", "攻撃", "斬", "殴", "combat", " se bat", "attaqu", " lucha", " pelea", " atac",
                "kämpf", "greift", "angriff")),
    ("chase", ("追", "逃げ", "poursui", " court ", "persigu", " corre ", " huye", "verfolg", " rennt", "flieht")),
    ("reveal", ("見つけ", "現れ", "découvr", "apparaît", " trouve", "descubr", " aparece", "encuentr",
                "entdeck", "erscheint")),
)

SAD = frozenset({*_forms("cry", "mourn", "grieve", "sob", "weep", "remember", "miss"), "wept", "tears",
                  "goodbye", "farewell", "lonely", "alone", "sad", "sorrow", "funeral", "grave", "lost",
                  "regret", "memories", "memory"})
TENDER = frozenset({*_forms("love", "confess", "hug", "embrace", "kiss", "smile", "comfort", "laugh"),
                     "gently", "warmly", "blush", "blushes"})
CONFLICT = frozenset({*_forms("argue", "shout", "yell", "threaten", "accuse", "demand", "insult", "glare",
                                "scream", "snarl", "refuse"), "angrily", "furious"})
EERIE = frozenset({*_forms("sneak", "hide", "creep", "search", "explore", "investigate", "lurk"), "hid",
                    "hidden", "shadow", "shadows", "dark", "darkness", "eerie", "ominous", "fog", "mist",
                    "abandoned", "silent", "haunted", "mysterious", "strange"})
FIRE = frozenset({"fire", "fires", "flame", "flames", "burning", "torch", "torches", "campfire", "lantern",
                   "lanterns", "candle", "candles", "bonfire", "embers"})
NEON = frozenset({"neon", "cyberpunk", "hologram", "holograms"})

TIME_WORDS = {
    **dict.fromkeys(("night", "midnight", "moonlit", "moonlight", "tonight", "nighttime", "starry", "starlight",
                     "夜"), "night"),
    **dict.fromkeys(("dusk", "sunset", "twilight", "evening", "夕方", "夕暮れ"), "dusk"),
    **dict.fromkeys(("dawn", "sunrise", "daybreak", "夜明け"), "dawn"),
    **dict.fromkeys(("morning", "朝"), "morning"),
    **dict.fromkeys(("noon", "midday", "afternoon", "daytime", "sunny", "daylight", "昼"), "day"),
}
PLACE_NOUNS = frozenset("""
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
PLACE_PREPS = frozenset({"in", "inside", "at", "on", "across", "through", "near", "under", "beneath", "atop", "by",
                          "within", "outside", "beside", "over", "into", "onto", "among", "along", "around",
                          "above", "below", "behind", "throughout"})
NAME_PLACE_PREPS = frozenset({"in", "inside", "across", "through", "within", "near", "from", "into",
                               "outside", "throughout", "of"})
CREATURES = frozenset("""
    dragon demon monster beast wolf fox cat dog bird crow raven tiger serpent snake giant golem titan
    kaiju creature alien vampire zombie ghost spirit witch wizard mage sorcerer knight samurai ninja
    soldier guard king queen prince princess stranger girl boy man woman child robot android cyborg
    mech mecha villain warrior swordsman swordswoman monk priest priestess thief pirate assassin hunter
    elf oni yokai kitsune phoenix griffin bear horse rival enemy hero heroine master teacher student
    captain general emperor empress traveler traveller detective
""".split())
PLURALS = {"wolves": "wolf", "men": "man", "women": "woman", "children": "child", "thieves": "thief",
            "elves": "elf"}
TITLES = frozenset("captain lady lord master sensei professor dr mr mrs ms miss sir king queen prince "
                    "princess general doctor uncle aunt grandma grandpa".split())
STOPWORDS = frozenset("""
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
SETTING_STARTS = PLACE_PREPS | {"after", "before", "while", "as", "when", "once", "if", "during", "until",
                                  "since", "because", "although", "though"}
SUBJECT_WORDS = frozenset({"the", "a", "an", "his", "her", "their", "its", "he", "she", "they", "it", "we",
                            "i", "you", "my", "our", "your"})
PRONOUN_SUBJECTS = frozenset({"he", "she", "they"})
# What follows a finite verb whose subject was left out ("..., then draws his sword", "and picks up
# the lantern"): an object's determiner, a particle or a preposition.
AFTER_ELIDED_VERB = frozenset({"his", "her", "their", "its", "the", "a", "an", "up", "down", "out", "off", "back",
                                "away", "at", "to", "into", "onto", "toward", "towards", "across", "through",
                                "over", "around", "from", "with"})
NOT_VERBS = frozenset({"is", "was", "has", "as", "his", "its", "this", "us", "thus", "plus", "yes", "towards",
                        "across", "less", "unless", "red", "bed", "seed", "speed", "need", "feed", "shed"})
PRONOUN_OBJECTS = frozenset({"him", "her", "them"})
DETERMINERS = "the|a|an|his|her|their|its|my|our|your|one|le|la|les|un|une|el|los|las|una|der|die|das|ein|eine"
FOREIGN_WORDS = frozenset({"le", "la", "les", "un", "une", "des", "du", "et", "il", "elle", "dans", "sur",
                            "avec", "contre", "se", "el", "los", "las", "una", "y", "con", "contra", "lo", "der",
                            "die", "das", "ein", "eine", "und", "mit", "gegen", "im", "den", "dem", "est", "ist",
                            "es", "sont", "pero", "mais", "puis", "luego", "dann", "sich"})
ENGLISH = frozenset({"the", "a", "an", "and", "to", "of", "in", "on", "at", "with", "is", "are", "his", "her",
                      "their", "then", "while", "as", "into", "from", "by", "for", "he", "she", "they", "it",
                      "this", "that", "over", "under", "through", "after", "where", "who"})

BLOW = {"fight": "blow", "battle": "blow", "duel": "blow", "clash": "blow", "brawl": "blow", "combat": "blow",
         "war": "blow", "attack": "attack", "strike": "strike", "slash": "slash", "punch": "punch",
         "kick": "kick", "stab": "thrust", "shoot": "shot", "blast": "blast", "swing": "swing",
         "charge": "charge", "tackle": "tackle", "lunge": "lunge", "slam": "slam", "bite": "bite",
         "claw": "claw", "smash": "smash", "throw": "throw", "hit": "hit"}

# Screen positions by order of appearance: the 180° line is set by the first two characters.
SIDES = ("screen-left facing right", "screen-right facing left", "centre background",
          "screen-left background", "screen-right background")
INTENSITY = ("serene", "earnest", "tender", "melancholic", "mysterious", "tense", "frantic", "intense")


