"""The emergency screen's rules: named phrase patterns over canonical text, with their guards.

Every rule reads one sentence of :func:`auren.neuros.safety.text.canonical` text (lower-case
words separated by single spaces; "can't" is "cannot", "don't" is "do not", "i'm" is "i am",
possessive "'s" is dropped, hyphens split words). A rule has:

- ``pattern``: what it looks for ("kill myself", "face ... drooping");
- ``weight``: 2 fires alone; 1 is a sign that fires only with another sign of the same
  category (stroke: "suddenly" + "arm feels weak");
- ``negatable``: whether "not", "no", "never" or "without" just before the match (auxiliary
  words such as "have", "been", "really" in between) cancel it ("no chest pain", "i am not
  suicidal"). Rules that are themselves negative ("do not want to live") are not negatable;
- ``unless``: a guard, searched in the same sentence with the match replaced by ``§``: it
  describes the figurative, sporting, accidental or past use of the same words ("§ of
  laughter", "§ sprints", "§ on the couch", "§ years ago");
- ``force``: words that make the guard not apply ("on purpose" after "hurt myself").

Guards are narrow on purpose: a false alarm costs one kind sentence, a miss could cost a life.
"""

from __future__ import annotations

import enum
import importlib
import re
from dataclasses import dataclass
from typing import Any


class Category(enum.StrEnum):
    """What kind of emergency a message describes; the reply depends on it."""

    OVERDOSE = "overdose"      # too much of a medicine, a poison swallowed (checked first)
    SUICIDE = "suicide"
    SELF_HARM = "self_harm"
    STROKE = "stroke"
    HEART = "heart"
    BREATHING = "breathing"
    OTHER = "other"            # collapse, unconsciousness, seizure, bleeding, danger


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    category: Category
    pattern: re.Pattern[str]
    weight: int = 2
    negatable: bool = True
    unless: re.Pattern[str] | None = None
    force: re.Pattern[str] | None = None
    # Strings of which every match contains at least one: a sentence without any of them
    # cannot match, and the pattern is not run on it (None: always run). See ``factors``.
    needs: frozenset[str] | None = None


def factors(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Literal strings of which every match of ``pattern`` contains one, or None.

    Read from the compiled pattern's parse tree: a sequence requires each of its mandatory
    parts, an alternation one of its branches' requirements; of a sequence's requirements the
    most selective is kept (longest shortest string, then fewest strings). Screening a
    sentence then starts with a few substring tests instead of every rule's regex (the screen
    is run on every chat, on messages up to the body cap). A shape this does not understand
    gives None, which only costs speed: the pattern is then always run.
    """
    try:
        # The standard library's own regex parser (3.11+); only speed depends on it.
        parser = importlib.import_module("re._parser")
        found = _required(list(parser.parse(pattern.pattern, pattern.flags)), parser)
    except Exception:  # noqa: BLE001 - a parser change falls back to running every rule
        return None
    return frozenset(found) if found else None


def _required(items: list[tuple[Any, Any]], parser: Any) -> set[str] | None:
    repeats = {getattr(parser, n) for n in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
               if hasattr(parser, n)}
    options: list[set[str]] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            options.append({"".join(run)})
            run.clear()

    for op, av in items:
        if op is parser.LITERAL:
            run.append(chr(av))
            continue
        close_run()
        found: set[str] | None = None
        if op is parser.SUBPATTERN:
            found = _required(list(av[-1]), parser)
        elif op is parser.BRANCH:
            branches = [_required(list(b), parser) for b in av[1]]
            if all(branches):
                found = set().union(*(b for b in branches if b))
        elif op in repeats and av[0] >= 1:
            found = _required(list(av[2]), parser)
        if found:
            options.append(found)
    close_run()
    if not options:
        return None
    return max(options, key=lambda o: (min(map(len, o)), -len(o)))


# --- shared vocabulary (placeholders <NAME> in the patterns below) -----------------------------

_PARTS: dict[str, str] = {
    "SELF": r"(?:myself|himself|herself|themselves|themself)",
    "POSS": r"(?:my|his|her|their|the|your|our)",
    "KIN": r"(?:friend|friends|dad|father|mom|mum|mother|husband|wife|partner|son|daughter|"
           r"baby|child|kid|kids|brother|sister|boyfriend|girlfriend|grandpa|grandma|"
           r"grandfather|grandmother|granddad|grandad|granny|nan|uncle|aunt|colleague|"
           r"roommate|flatmate|neighbor|neighbour|toddler|teen|teenager|boss|coworker|fiance|"
           r"fiancee|spouse|parent|parents|cousin|nephew|niece|teammate|classmate)",
    "DRUG": r"(?:pills|pill|tablets|tablet|tabs|capsules|caps|meds|medication|medications|"
            r"medicine|medicines|painkillers|antidepressants|insulin|paracetamol|"
            r"acetaminophen|tylenol|ibuprofen|advil|aspirin|xanax|valium|benzos|"
            r"benzodiazepines|oxycodone|oxycontin|oxy|opioids|opiates|fentanyl|heroin|"
            r"morphine|codeine|tramadol|melatonin|ambien|zolpidem|lithium|sertraline|"
            r"prozac|diazepam|lorazepam|klonopin|gabapentin|seroquel|quetiapine|adderall|"
            r"gummies|sleeping pills|sleeping tablets|sleep aids|nyquil|benadryl|prescription|"
            r"diphenhydramine|antihistamines|methadone|percocet|vicodin|hydrocodone)",
    # Wanting, as people say it before "to die" ("i have been wanting to die").
    "DESIRE": r"(?:~want|~wish|~hope|~pray|~plan|~deserve|~try|~decide|~need|ready|would "
              r"like|~prefer|~long|~beg|should)",
    "ADV": r"(?:just|really|simply|finally|already|honestly|kinda|kind of|so|literally|"
           r"actually|seriously|truly|still|sometimes|often|badly)",
    # Words between a body part and its symptom ("my chest feels really tight").
    "FILL": r"(?:is|are|was|feels|felt|feel|really|so|very|has|have|been|being|a|bit|little|"
            r"kind|of|sort|started|starting|getting|keeps|keep|still|just|suddenly|all|now|"
            r"like|it|looks|look|looking|seems|seem|seemed|went|gone|totally|completely|"
            r"literally)",
    "EXERCISE": r"(?:run|runs|running|ran|sprint|sprints|sprinting|race|racing|intervals|"
                r"interval|repeats|reps|workout|workouts|session|hill|hills|climb|climbing|"
                r"stairs|swim|swimming|spin|class|hiit|set|sets|400s|800s|400m|800m|tempo|"
                r"training|exercise|exercising|jog|jogging|ride|cycling|bike|gym|game|match|"
                r"lifting|squats|burpees|altitude|hike|hiking|cardio|marathon|5k|10k)",
    "AGO": r"(?:(?:\w+ )?(?:years?|months?|weeks?) ago|last (?:year|month|summer|winter|spring|"
           r"fall|autumn)|as a (?:kid|child|teen|teenager)|when i was (?:a |younger|little|"
           r"young|\w+ )|in (?:19|20)\d\d|in the past|once before|years back)",
}


# Verbs whose forms English does not make by rule.
_IRREGULAR: dict[str, tuple[str, ...]] = {
    "die": ("dies", "died", "dying"), "lie": ("lies", "lay", "lain", "lying"),
    "take": ("takes", "took", "taken", "taking"), "feel": ("feels", "felt", "feeling"),
    "think": ("thinks", "thought", "thinking"), "shoot": ("shoots", "shot", "shooting"),
    "hang": ("hangs", "hanged", "hung", "hanging"), "bleed": ("bleeds", "bled", "bleeding"),
    "drink": ("drinks", "drank", "drunk", "drinking"), "eat": ("eats", "ate", "eaten", "eating"),
    "burn": ("burns", "burned", "burnt", "burning"), "hit": ("hits", "hitting"),
    "cut": ("cuts", "cutting"), "hurt": ("hurts", "hurting"), "slit": ("slits", "slitting"),
    "commit": ("commits", "committed", "committing"), "give": ("gives", "gave", "given",
                                                                "giving"),
    "get": ("gets", "got", "gotten", "getting"), "go": ("goes", "went", "gone", "going"),
    "fall": ("falls", "fell", "fallen", "falling"), "write": ("writes", "wrote", "written",
                                                              "writing"),
    "beat": ("beats", "beaten", "beating"), "bite": ("bites", "bit", "bitten", "biting"),
    "swell": ("swells", "swelled", "swollen", "swelling"), "see": ("sees", "saw", "seen",
                                                                   "seeing"),
}
_VOWELS = "aeiou"


def inflections(verb: str) -> tuple[str, ...]:
    """``verb`` and its forms: "wish" -> wish, wishes, wished, wishing; "plan" -> planned..."""
    if verb in _IRREGULAR:
        return (verb, *_IRREGULAR[verb])
    # One short syllable ending consonant-vowel-consonant doubles its consonant (plan,
    # planned); "vomit" does not.
    double = (len(verb) <= 4 and len(verb) >= 3 and verb[-1] not in _VOWELS + "wxy"
              and verb[-2] in _VOWELS and verb[-3] not in _VOWELS)
    stem = verb + verb[-1] if double else verb
    if verb.endswith("e") and not verb.endswith("ee"):
        past, ing = verb + "d", verb[:-1] + "ing"
    elif verb.endswith("y") and verb[-2] not in _VOWELS:
        past, ing = verb[:-1] + "ied", verb + "ing"
    else:
        past, ing = stem + "ed", stem + "ing"
    third = (verb + "es" if verb.endswith(("s", "sh", "ch", "x", "z", "o"))
             else verb[:-1] + "ies" if verb.endswith("y") and verb[-2] not in _VOWELS
             else verb + "s")
    return (verb, third, past, ing)


_VERB = re.compile(r"~([a-z]+)")


def _rx(source: str) -> re.Pattern[str]:
    for name, part in _PARTS.items():
        source = source.replace(f"<{name}>", part)
    if "<" in source.replace("(?<", ""):
        raise ValueError(f"unknown placeholder in {source!r}")
    source = _VERB.sub(lambda m: "(?:" + "|".join(inflections(m.group(1))) + ")", source)
    return re.compile(source)


def make_rule(name: str, category: Category, pattern: str, *, weight: int = 2,
              negatable: bool = True, unless: str | None = None,
              force: str | None = None) -> Rule:
    """A rule from pattern sources (placeholders ``<NAME>`` and verbs ``~verb`` expanded)."""
    compiled = _rx(pattern)
    return Rule(name, category, compiled, weight, negatable, _rx(unless) if unless else None,
                _rx(force) if force else None, factors(compiled))


_rule = make_rule


S, H, OD = Category.SUICIDE, Category.SELF_HARM, Category.OVERDOSE
K, C, B, X = Category.STROKE, Category.HEART, Category.BREATHING, Category.OTHER

_ACCIDENT = (r"§ (?:\w+ ){0,2}(?:while|when|during|playing|doing|running|lifting|deadlifting|"
             r"squatting|training|cooking|shaving|chopping|slicing|gardening|cycling|riding|"
             r"skiing|climbing|falling|ironing|baking|at (?:the |my )?(?:gym|work|practice|"
             r"training|park|game|match)|on (?:the|a|my) (?:stove|oven|pan|iron|bike|treadmill|"
             r"trail|stairs|ice|court|field|bar|kettle|grill|hob|glass)|in (?:the|a) (?:kitchen|"
             r"gym|game|match|race|fall)|by accident|accidentally|out\b)|"
             r"\b(?:accident|accidentally)\b")
_INTENT = (r"\b(?:on purpose|deliberately|intentionally|to cope|to feel|urges?|want|wanted|"
           r"wanting|thinking|thoughts|scared|afraid|cannot stop|keep|keeps|again|relapsed?|"
           r"been|always|every time|whenever|angry|anxious|stressed|upset|sad|overwhelmed|"
           r"panic\w*|hate myself|numb|punish\w*|deserve)\b")
_EXERTION_SHORT = (r"\b(?:on|during|after|in|at|up) (?:that|this|the|my|a) (?:\w+ )?"
                   r"(?:run|race|climb|hill|workout|session|class|hike|ride|interval|"
                   r"intervals|sprint|sprints|marathon|set|wod)\b|\blol\b|\bhaha\b")
_EXERTION = r"\b(?:during|on|in|at|after|while|from|doing|up|climbing) (?:\w+ ){0,2}<EXERCISE>\b"
_AT_REST = (r"\b(?:sitting (?:still|down|on)|lying (?:still|down|in bed)|at rest|while "
            r"resting|even resting|in bed|doing nothing|right now|help|severe|severely|"
            r"getting worse|worst|suddenly|sudden)\b")

RULES: tuple[Rule, ...] = (
    # --- suicide -------------------------------------------------------------------------------
    _rule("kill-self", S,
          r"\b(?:~kill|~end|~hang|~shoot|off|offing|~drown|~poison|~suffocate|~strangle|"
          r"~electrocute|~overdose|~starve) <SELF>\b", negatable=False,
          unless=r"§ (?:laughing|with laughter|in the foot|upside down|at (?:work|the gym|the "
                 r"office)|with (?:these|this|work|training|workouts?|overtime)|over (?:this|"
                 r"work|deadlines)|to (?:get|hit|make|finish|reach|keep up|please))",
          force=r"\b(?:think\w*|thoughts?|want\w*|plan\w*|going to|about to|urge|wish)\b"),
    _rule("want-to-die", S,
          r"\b<DESIRE> (?:to |too |2 )?(?:<ADV> )*(?:die|be dead|dye(?= [.,;:!?]|$)|stop "
          r"existing|stop living|stop being alive|cease to exist|not exist|not be alive|not "
          r"be here anymore|be gone forever|not wake up|never wake up)\b",
          unless=r"§ (?:of|from) (?:laughter|laughing|embarrassment|boredom|shame|cringe|envy|"
                 r"jealousy|happiness|curiosity|excitement)|§ on (?:this|that) hill|§ (?:old|"
                 r"happy|healthy|fit|strong|peacefully at)\b|§ (?:my|his|her|the|it) (?:hair|"
                 r"beard|clothes|shirt|shoes|eggs|roots|fabric)\b"),
    _rule("feel-like-dying", S,
          r"\b~feel like (?:i am |i was )?(?:<ADV> )*(?:dying|ending it|ending my life|"
          r"killing myself|giving up on life|disappearing forever|not existing|not being "
          r"alive|i want to die|i should die|i should just die)\b",
          unless=rf"{_EXERTION_SHORT}"),
    _rule("wish-dead", S,
          r"\b~wish (?:that )?(?:i|he|she) (?:was|were|could be|would be|could|would)? ?"
          r"(?:<ADV> )*(?:dead|die|disappear|gone)\b|"
          r"\b~wish (?:that )?(?:i|he|she) (?:was|were|had|did|could|would|could just)? ?"
          r"(?:not|never) (?:<ADV> )*(?:been born|born|exist|existed|alive|here|around|be here|"
          r"be alive|be around|wake up|woken up)\b|"
          r"\b(?:rather be|better off|~want to be|like to be) (?:<ADV> )*dead\b|"
          r"\b(?:be|are|is) better off without me\b|\bwould (?:all )?be better without "
          r"me\b|"
          r"\b(?:nobody|no one|noone) would (?:even )?(?:notice|care|miss me)\b"
          r"(?: if i (?:was|were|died|disappeared|was gone|were gone))?"),
    _rule("no-will-to-live", S,
          r"\b(?:not|never|no longer) (?:\w+ ){0,2}(?:want|wanna|wish|feel like|care|see the "
          r"point|see a reason|see any reason) (?:to |in )?(?:live|living|be alive|being "
          r"alive|exist|existing|be here anymore|be here any more|be around anymore|go on|"
          r"keep going|keep living|carry on|continue living|wake up (?:again|ever|anymore|"
          r"tomorrow)|wake up(?= [.,;:!?]|$))\b|"
          r"\b(?:tired|sick|done|finished|over) (?:of|with) (?:living|life|being alive|"
          r"existing|it all)\b|"
          r"\b(?:no|nothing|not any|not a|without a|any) (?:\w+ ){0,2}(?:reason|point|"
          r"purpose) (?:\w+ ){0,2}(?:to live|to go on|to keep going|to be alive|in living|"
          r"of living|in being alive|for living|in life|living|being alive|going on)\b|"
          r"\bnothing (?:left )?to live for\b|\b(?:what is|whats) the point (?:of|in) "
          r"(?:living|life|being alive|going on|anything)\b|"
          r"\b(?:life|it) (?:is|feels) (?:not|no longer|not even) worth (?:living|it anymore)\b|"
          r"\bnot worth living\b|\bcannot (?:go on|keep) living\b", negatable=False),
    _rule("end-life", S,
          r"\b(?:end|ending|ended|take|taking|took) <POSS> (?:own )?life\b|"
          r"\bend(?:ing|ed)? (?:it all|everything|things for good|it for good|it forever|"
          r"things forever|it tonight|it today|things tonight|it now|it once and for all|"
          r"my suffering|the pain for good)\b|"
          r"\b(?:want|wanted|wanting|need) (?:it|everything|it all|the pain|things) (?:all )?"
          r"to (?:stop|end|be over) (?:for good|forever|permanently)\b|"
          r"\b(?:~want|~need|~wish) (?:<ADV> )*(?:it all|everything|my life) to (?:<ADV> )*"
          r"(?:stop|end|be over)\b|"
          r"\b(?:want|wanted) it all to end\b", negatable=False,
          unless=r"§ (?:back|into (?:my|his|her) (?:own )?hands|to the next level)|"
                 r"\b(?:subscription|membership|streak|fast|workout|session|contract)\b"),
    _rule("suicide", S, r"\b(?:suicide|suicidal|suicidality|suicidally)\b",
          unless=r"§ (?:sprints?|runs?|drills?|shuttles?|squad|doors?|bomb\w*|mission|king|"
                 r"prevention (?:training|month|day|week|charity|walk|course|work|volunteer))"),
    _rule("method-seeking", S,
          r"\b(?:lethal|fatal|deadly|overdose) (?:dose|amount|quantity)\b|"
          r"\bhow (?:many|much) (?:\w+ ){0,5}(?:to|would it take to|does it take to|until i|"
          r"before i) (?:die|kill|end it|end my life|never wake up|not wake up|overdose)\b|"
          r"\b(?:easiest|quickest|fastest|best|painless|least painful|surest|simplest) "
          r"(?:way|ways|method|methods) to (?:die|kill (?:myself|yourself)|end (?:it|my life|"
          r"things)|commit suicide)\b|"
          r"\bways to (?:die|kill (?:myself|yourself)|commit suicide|end my life)\b",
          negatable=False),
    _rule("act", S,
          r"\bjump(?:ing|ed)? (?:off|from|in front of|into|under) (?:a |an |the |my |this "
          r"|that )?(?:\w+ )?(?:bridge|building|roof|rooftop|cliff|balcony|ledge|train|bus|"
          r"truck|tower|window|overpass|traffic|car park)\b|"
          r"\bon (?:a|the) (?:\w+ )?(?:bridge|ledge|roof|rooftop|balcony|cliff|edge)\b.*"
          r"\b(?:jump|let go|end it)\b|"
          r"\b(?:drive|crash|steer|driving|crashing) (?:my|the) car (?:into|off) (?:a|the) "
          r"(?:wall|tree|bridge|cliff|river|truck|traffic|barrier)\b|"
          r"\b(?:use|using|turn|turning|point|pointing) (?:it|the gun|a gun|my gun) on "
          r"(?:myself|me)\b|"
          r"\b(?:pills|tablets|rope|gun|knife|blade|plan)\b.*\b(?:end it|do it tonight|"
          r"end it tonight)\b", negatable=False,
          unless=r"\b(?:skydive|skydiving|bungee|parachute|pool|lake|sea|river for a swim)\b"),
    _rule("farewell", S,
          r"\b(?:giving|gave|give|given) away (?:all )?(?:my|his|her) (?:things|stuff|"
          r"belongings|possessions)\b|"
          r"\b(?:wrote|writing|written|write|left|leaving|sent|sending) (?:a |my |the |some )?"
          r"(?:goodbye|suicide|farewell) (?:letters?|notes?|messages?|texts?)\b|"
          r"\bnot (?:going to )?be (?:around|here|alive) (?:much longer|for (?:much )?longer|"
          r"anymore|tomorrow|by (?:tomorrow|morning|monday|the weekend))\b|"
          r"\bwill not need (?:them|it|any of (?:it|this)|my things) (?:soon|much longer|"
          r"anymore|after)\b", negatable=False),
    _rule("sleep-forever", S,
          r"\b(?:want|wanted|wanting|wish|wishing) to (?:disappear|vanish) (?:forever|for good|"
          r"permanently|and never come back)\b|"
          r"\b(?:sleep|go to sleep|fall asleep) (?:and )?(?:forever|and never wake up|and not "
          r"wake up|and never come back)\b|"
          r"\b(?:hope|hoping|wish|wishing|want|pray|praying|rather) (?:that )?(?:i |to )?"
          r"(?:\w+ ){0,2}(?:never|not|do not|will not|would not|did not) wake up\b",
          negatable=False, unless=r"\bcould (?:\w+ )?§",
          force=r"\b(?:wish|wishing|want|wanted|hope|hoping|pray|praying|rather)\b"),
    _rule("thoughts-of-dying", S,
          r"\b(?:thinking|think|thought|thoughts|dreaming|fantasizing|fantasising|obsessing|"
          r"obsessed) (?:about|of) (?:dying|death|suicide|killing myself|ending (?:it|my life|"
          r"things|it all)|not being (?:here|alive|around)|taking my (?:own )?life|being "
          r"dead)\b"),
    _rule("no-way-out", S,
          r"\b(?:see|is|there is|have|find) no way out\b(?! of)|\b(?:see|find) (?:a|any) way "
          r"out (?:except|but|other than)\b|\bway out (?:except|but|other than) (?:dying|"
          r"death|suicide|to die|killing)\b", negatable=False),
    _rule("kill-me", S,
          r"\b(?:want|wish|need) (?:someone|somebody|you|them|him|her|god|a car|a truck) "
          r"(?:would |to |could )?(?:just )?(?:kill|shoot) me\b"),
    _rule("despair", S,
          r"\b(?:life is|everything is|i am|i feel|feel so|feeling|i am just) (?:\w+ ){0,2}"
          r"(?:pointless|hopeless|worthless|meaningless|a burden|empty inside|numb inside)\b|"
          r"\bhate (?:my life|being alive|living|myself so much)\b|"
          r"\bcannot (?:go on|do this anymore|take it anymore|take this anymore|cope "
          r"anymore)\b|\bgive up on (?:life|everything|living)\b|\bno (?:hope|future) "
          r"(?:left|for me)\b", weight=1),
    _rule("end-it", S,
          r"\b(?:want|wanted|going|need|plan|planning|ready|decided|about) to (?:just )?end "
          r"it\b|\b(?:should|could|might|will|gonna) (?:<ADV> )*end it\b|\bend it (?:all )?"
          r"(?:soon|now)\b", weight=1),
    # --- self-harm -----------------------------------------------------------------------------
    _rule("harm-self", H,
          r"\b(?:cut|cuts|cutting|burn|burns|burning|burned|burnt|hurt|hurts|hurting|harm|"
          r"harms|harming|harmed|hit|hits|hitting|punch|punching|punched|scratch|scratching|"
          r"scratched|mutilate|mutilating|mutilated|stab|stabbing|stabbed|bruise|bruising|"
          r"bruised) <SELF>\b", unless=_ACCIDENT, force=_INTENT),
    _rule("harm-body", H,
          r"\b(?:cut|cutting|cuts|slit|slitting|slice|slicing|scratch|scratching|scratched|"
          r"carve|carving|carved|burn|burning|burned|burnt|stab|stabbing) (?:my|his|her|their)"
          r" (?:own )?(?:wrists?|arms?|forearms?|thighs?|skin|stomach|body)\b",
          unless=_ACCIDENT, force=_INTENT),
    _rule("did-it-to-self", H,
          r"\b(?:did|does|do|done|doing) (?:it|this|that|them) to (?:<SELF>)\b", weight=1),
    _rule("cutting-again", H,
          r"\b(?:started|start|been|keep|keeps|am|i am) cutting (?:myself )?again\b|"
          r"\bcutting again\b", weight=1),
    _rule("marked-body", H,
          r"\b(?:arms?|wrists?|thighs?|legs?|skin) (?:<FILL> ){0,3}(?:a mess|covered in "
          r"(?:cuts|scars|burns|blood)|cut up|scarred|all cut)\b", weight=1),
    _rule("cuts-on-body", H,
          r"\b(?:cuts|scars|burns|wounds|marks) (?:\w+ ){0,2}(?:on|all over) (?:my|his|her|"
          r"their) (?:arms?|wrists?|thighs?|legs?|stomach)\b", weight=1),
    _rule("self-harm", H,
          r"\bself (?:harm|harming|harmed|injury|injuring|injured|injure|mutilation|"
          r"mutilate|mutilating|inflicted)\b",
          unless=r"\bused to (?:\w+ )?§|\bhistory of §|§ (?:awareness|research|scars from "
                 r"years)"),
    _rule("urge-to-harm", H,
          r"\b(?:urge|urges) to (?:cut|burn|harm|hurt|self harm)\b|\bslit (?:my|his|her) "
          r"wrists?\b"),
    # --- overdose and poisoning ----------------------------------------------------------------
    _rule("overdose", OD, r"\b(?:overdose|overdosed|overdosing|overdoses)\b",
          unless=r"§ on (?:\w+ )?(?:caffeine|coffee|espresso|sugar|carbs|chocolate|candy|"
                 r"sweets|cake|pizza|netflix|tv|youtube|tiktok|social media|cardio|running|"
                 r"training|work|sun|sunshine|energy drinks?|memes|podcasts|content|anime|"
                 r"exercise|miles|protein|junk food|food)\b|"
                 r"\b(?:died|passed away|lost \w+|death|deaths|die) (?:\w+ )?(?:from|of|to) "
                 r"(?:an |a )?§|§ (?:awareness|statistics|rates|crisis)\b"),
    _rule("too-much-medicine", OD,
          r"\b(?:took|taken|take|taking|swallowed|swallow|swallowing|ate|eaten|had|injected|"
          r"inject|drank|popped|pop|used|snorted|chugged|downed|overtook) (?:\w+ ){0,2}"
          r"(?:(?:way |far |much )?(?:too|to) (?:many|much)|(?:a|the) (?:whole|full|entire) "
          r"(?:bottle|pack|packet|box|strip|jar|tub|blister|sheet)|an entire (?:bottle|pack|"
          r"packet|box|strip|jar)|a (?:bottle|pack|packet|box|handful|fistful|bunch|load|lot|"
          r"ton|heap|pile) of|(?:all|most) (?:of )?(?:my|his|her|the|their)|(?:loads|lots|"
          r"dozens|tons|heaps) of|(?:double|triple|twice) (?:my |the |his |her )?(?:dose|"
          r"amount|dosage)|a (?:double|triple) dose|(?:like |about |around |over |maybe |at "
          r"least )?(?:[1-9]\d+|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|hundred))"
          r" (?:of )?(?:(?:my|his|her|their|the|mom|moms|mum|mums|dad|dads|someone|these|"
          r"those) )?(?:\w+ ){0,2}<DRUG>\b|"
          r"\bswallowed (?:some|several|a few|random|unknown|loads of) (?:of )?(?:\w+ ){0,2}"
          r"<DRUG>\b|"
          r"\b(?:took|taken|swallowed|downed|popped) (?:my|his|her|the|their) (?:whole|entire|"
          r"full) (?:prescription|supply|stash|bottle|pack|packet|box|strip)\b|"
          r"\b(?:took|taken|swallowed|had|popped) (?:like |about |around |maybe )?(?:[5-9]|five|"
          r"six|seven|eight|nine) (?:of )?(?:my |his |her )?(?:sleeping pills|sleeping tablets|"
          r"sleeping|xanax|valium|benzos|diazepam|lorazepam|klonopin|ambien|zolpidem|"
          r"oxycodone|oxy|opioids|morphine|codeine|tramadol|methadone|percocet|vicodin|"
          r"paracetamol|acetaminophen|tylenol|insulin|seroquel|lithium)\b"),
    _rule("stockpiling", S,
          r"\b(?:~save|~stockpile|~hoard|~collect|~stash) (?:up )?(?:all )?(?:of )?(?:my |his |"
          r"her )?(?:\w+ )?<DRUG>\b|\b<DRUG> (?:\w+ )?(?:saved|stockpiled|hoarded|stashed) "
          r"up\b", weight=1,
          unless=r"§ (?:\w+ ){0,2}for (?:the|my|a) (?:trip|holiday|vacation|travel|flight)"),
    _rule("ate-medicine", OD,
          r"\b(?:ate|eaten|eating|chewed|chewing|got into|gotten into|found and took) "
          r"(?:\w+ ){0,3}<DRUG>\b|"
          r"\b(?:baby|toddler|kid|child|son|daughter|little one|grandchild|grandson|"
          r"granddaughter) (?:\w+ ){0,2}(?:took|swallowed|ate|had|drank) (?:\w+ ){0,4}"
          r"(?:<DRUG>|medicine|vitamins|iron tablets)\b",
          unless=r"\b(?:prescribed|as prescribed|with (?:food|dinner|breakfast|a meal))\b"),
    _rule("medicine-and-alcohol", OD,
          r"\b(?:mix|mixed|mixing|combined|combining) (?:\w+ ){0,3}(?:alcohol|booze|drinks|"
          r"drinking|wine|beer|vodka|whiskey|liquor) (?:with|and) (?:\w+ ){0,2}<DRUG>\b|"
          r"\b(?:mix|mixed|mixing|combined|combining) (?:\w+ ){0,2}<DRUG> (?:with|and) "
          r"(?:alcohol|booze|vodka|wine|beer|drinks)\b"),
    _rule("alcohol-and-sedatives", OD,
          r"\b(?:vodka|whiskey|whisky|wine|beer|beers|alcohol|booze|drinks|shots|gin|rum|"
          r"tequila)\b.*\b(?:took|taken|swallowed|popped|had) (?:\w+ ){0,3}(?:sleeping pills|"
          r"sleeping tablets|sleep aids|xanax|valium|benzos|diazepam|lorazepam|klonopin|ambien|"
          r"zolpidem|oxycodone|oxy|opioids|fentanyl|heroin|morphine|codeine|tramadol|"
          r"methadone|percocet|vicodin|painkillers)\b|"
          r"\b(?:took|taken|swallowed|popped) (?:\w+ ){0,3}(?:sleeping pills|sleeping tablets|"
          r"xanax|valium|benzos|ambien|oxycodone|opioids|painkillers)\b.*\b(?:drank|drinking|"
          r"drunk) (?:a |an |the )?(?:bottle|lot|loads|fifth|\d+)\b|"
          r"\b(?:drank|downed|finished|chugged) (?:a |an |the )?(?:whole |entire |full )?"
          r"(?:bottle|fifth) of (?:vodka|whiskey|whisky|gin|rum|tequila)\b"),
    _rule("poison", OD,
          r"\b(?:drank|drink|drinking|swallowed|swallow|swallowing|ate|eaten|eating|ingested|"
          r"inhaled|inhaling|injected|took|licked|chewed) (?:\w+ ){0,3}(?:bleach|antifreeze|"
          r"rat poison|poison|detergent|cleaning (?:fluid|product|products|liquid|spray)|"
          r"laundry (?:pod|pods|capsule|capsules|detergent)|tide pods?|drain cleaner|weed ?killer|"
          r"pesticide|insecticide|button battery|button batteries|battery|batteries|lighter fluid|"
          r"gasoline|petrol|paint thinner|methanol|windshield washer|lamp oil|ammonia|"
          r"oven cleaner|toilet cleaner|dishwasher (?:tablet|tablets|pod|pods)|wild "
          r"mushrooms)\b|"
          r"\bcarbon monoxide (?:alarm|detector) (?:is |keeps |went |just )?(?:going off|went "
          r"off|beeping|sounding|goes off)\b|\bcarbon monoxide (?:poisoning|leak)\b|"
          r"\b(?:been|got|am|was|is|are|being) poisoned\b",
          unless=r"\bfood poison|\b(?:battery|batteries) (?:died|dead|life)\b"),
    # --- stroke (FAST: face drooping, arm weakness, speech, time) ------------------------------
    _rule("face-drooping", K,
          r"\b(?:face|mouth|smile|lip|lips|cheek|side of (?:my|his|her|the) face) (?:<FILL> |"
          r"\w+ ){0,3}(?:drooping|droopy|droops|drooped|droop|sagging|sags|sagged|fallen|"
          r"lopsided|crooked|uneven|paralysed|paralyzed|frozen)\b|"
          r"\b(?:drooping|droopy|lopsided|crooked|paralysed|paralyzed) (?:\w+ )?(?:face|mouth|"
          r"smile)\b|"
          r"\bside of (?:my|his|her|the) (?:face|mouth) (?:<FILL> ){0,3}(?:dropped|dropping|"
          r"drops|slipped|slipping|sunk|sagging|collapsed)\b"),
    _rule("speech-slurred", K,
          r"\b(?:speech|words|talking|speaking|voice) (?:\w+ ){0,3}(?:slurred|slurring|slurry|"
          r"garbled|jumbled|gibberish)\b|\b(?:slurred|slurring|garbled|jumbled) (?:\w+ ){0,2}"
          r"(?:speech|words|talking|speaking)\b|\bslurring\b|\bslurred\b"),
    _rule("stroke-now", K,
          r"\b(?:having|had|have|having had|is having|am having|think i am having|might be "
          r"having|just had|had just) (?:a |an )?(?:stroke|stoke|mini stroke|tia)\b|"
          r"\b(?:is|was) (?:this|that|it) (?:a |an )?(?:stroke|stoke|mini stroke)\b|"
          r"\bstroke (?:symptoms|signs)\b|\bstroke right now\b",
          unless=r"§ <AGO>|\b(?:risk|chance|odds|history|after|since|recover\w*|prevent\w*) "
                 r"(?:of |from |a |an |my |his |her )*§|§ (?:of luck|of genius|rate|count)"),
    _rule("worst-headache", K,
          r"\b(?:worst|worse) (?:headache|head ache) (?:\w+ ){0,3}(?:of my life|i have ever "
          r"had|i have ever felt|ever)\b|\bthunderclap headache\b"),
    _rule("sudden", K, r"\b(?:sudden|suddenly|all of a sudden|out of nowhere|out of the blue)\b",
          weight=1),
    _rule("one-side", K,
          r"\b(?:one|left|right) side of (?:my|his|her|the) (?:face|body|mouth)\b|"
          r"\bhalf (?:of )?(?:my|his|her) (?:face|body)\b|"
          r"\b(?:left|right) side (?:went|is|feels|has gone) (?:numb|weak|dead|limp|heavy)\b|"
          r"\bon one side\b", weight=1),
    _rule("face-numb", K,
          r"\b(?:face|cheek|lip|lips|mouth) (?:<FILL> ){0,3}(?:numb|tingling|weird|funny|"
          r"strange|weak|heavy)\b|\bcannot (?:feel|move) (?:\w+ ){0,5}(?:face|mouth)\b",
          weight=1),
    _rule("arm-weak", K,
          r"\b(?:arm|arms|hand|hands) (?:<FILL> ){0,3}(?:weak|numb|limp|heavy|dead|useless|"
          r"tingling|floppy)\b|\b(?:weakness|numbness) (?:\w+ ){0,3}(?:arm|hand|side)\b|"
          r"\bcannot (?:lift|raise|move|feel|use|hold up) (?:\w+ ){0,2}(?:arm|arms|hand)\b",
          weight=1),
    _rule("speech-trouble", K,
          r"\b(?:cannot|can barely|trouble|difficulty|struggling to|hard to) (?:\w+ )?"
          r"(?:speak|speaking|talk|talking|get (?:my |the )?words out|find (?:my|the) words)\b|"
          r"\bspeech (?:<FILL> ){0,3}(?:weird|strange|funny|off|wrong|gone weird)\b|"
          r"\bwords (?:<FILL> |\w+ ){0,3}(?:wrong|weird|mixed up)\b|"
          r"\btalking (?:funny|strange|weird|gibberish)\b", weight=1),
    _rule("vision-loss", K,
          r"\b(?:cannot|can not|lost|losing|loss of) (?:\w+ )?(?:see|vision|sight)\b|"
          r"\bvision (?:\w+ ){0,2}(?:went|gone|black|double)\b|\bout of one eye\b|"
          r"\bdouble vision\b", weight=1),
    _rule("confusion", K,
          r"\b(?:confused|confusion|disoriented|disorientated|not making (?:any )?sense|"
          r"making no sense)\b", weight=1),
    _rule("side-paralysis", K,
          r"\b(?:cannot|can not|unable to) (?:move|feel|lift|use) (?:\w+ ){0,3}(?:left|right|"
          r"one) side\b|\b(?:left|right|one) side (?:of (?:my|his|her|the) (?:body|face) )?"
          r"(?:<FILL> ){0,3}(?:paralysed|paralyzed|numb|dead|limp)\b"),
    _rule("balance", K,
          r"\b(?:cannot|unable to|trouble) (?:walk|stand) (?:up )?(?:straight|properly|up)\b|"
          r"\blost (?:my|his|her) balance\b|\b(?:dizzy|dizziness|vertigo)\b", weight=1),
    _rule("severe-headache", K,
          r"\b(?:terrible|severe|awful|horrible|excruciating|splitting|blinding) headache\b",
          weight=1),
    # --- heart ---------------------------------------------------------------------------------
    _rule("chest-pain", C,
          r"\bchest (?:<FILL> ){0,5}(?:pain|pains|pressure|heavy|heaviness|~squeeze|~crush|"
          r"discomfort|burning|killing me|is killing me|tightening|~explode|~cave in)\b|"
          r"\b(?:crushing|squeezing|heavy|painful|burning) (?:\w+ )?chest\b|"
          r"\b(?:pain|pains|pressure|heaviness|squeezing|crushing|discomfort|weight|elephant|"
          r"squeeze|tightness) (?:\w+ ){0,3}(?:in|on|across|around|at|behind|through|to) "
          r"(?:my|his|her|the|their) chest\b|"
          r"\b(?:clutching|clutched|grabbing|holding) (?:my|his|her|their) chest\b",
          unless=r"§ (?:\w+ ){0,3}<AGO>|§ (?:\w+ ){0,2}(?:that )?turned out"),
    _rule("chest-ache", C,
          r"\bchest (?:<FILL> ){0,5}(?:tight|tightness|hurts|hurt|hurting|ache|aches|aching|"
          r"sore)\b|\b(?:tight|aching|sore) chest\b",
          unless=r"§ (?:\w+ ){0,2}(?:after|from|since) (?:\w+ ){0,2}(?:bench|benching|"
                 r"push ups|pushups|press ups|dips|flyes|flies|chest day|lifting|weights|the "
                 r"gym|workout|training)|§ (?:\w+ ){0,3}<AGO>|§ (?:\w+ ){0,2}(?:that )?"
                 r"turned out"),
    _rule("heart-attack", C,
          r"\b(?:having|have|had just|just had|think i am having|might be having|is having|"
          r"am having|feel like i am having|this is|is this|is it|could this be|am i having) "
          r"(?:a |an )?heart attack\b|\bheart attack (?:symptoms|right now|now|i think)\b",
          unless=r"§ (?:\w+ )?(?:years?|months?|weeks?) ago|§ last (?:year|month|week)|§ when "
                 r"i (?:saw|looked|read|opened|got)|\b(?:gave|give|gives) me (?:a )?§"),
    _rule("pain-spreading", C,
          r"\bpain (?:\w+ ){0,3}(?:spreading|radiating|going|shooting|moving) (?:\w+ ){0,2}"
          r"(?:to|into|down|up|through) (?:my|his|her) (?:left )?(?:arm|jaw|neck|back|"
          r"shoulder)\b"),
    _rule("palpitations", C,
          r"\bheart (?:\w+ ){0,2}(?:racing|pounding|hammering|beating (?:\w+ )?fast|"
          r"fluttering|irregular|beating out of)\b|"
          r"\bheart rate (?:is |of |at |has been |been |says |reads )?(?:1[5-9]\d|2\d\d)\b|"
          r"\bracing at (?:1[5-9]\d|2\d\d)\b", weight=1),
    _rule("not-settling", C,
          r"\b(?:will not|does not|cannot|not) (?:slow down|calm down|settle|stop racing)\b",
          weight=1),
    _rule("cold-sweat", C, r"\b(?:cold sweats?|clammy|pale and sweaty|sweating buckets)\b",
          weight=1),
    _rule("dizzy-with-heart", C,
          r"\b(?:dizzy|dizziness|lightheaded|light headed|woozy|about to faint)\b", weight=1),
    _rule("jaw-arm-pain", C,
          r"\bpain (?:in|down) (?:my|his|her) (?:jaw|left arm|neck)\b|\b(?:jaw|left arm) "
          r"(?:<FILL> ){0,3}(?:pain|hurts|aching|aches)\b", weight=1),
    # --- breathing -----------------------------------------------------------------------------
    _rule("cannot-breathe", B,
          r"\b(?:cannot|could not|can barely|can hardly|barely|unable to|struggling to|"
          r"struggle to|struggling|hard to|hard time|trouble|difficulty|difficult to|not able "
          r"to|fighting to|fight to) (?:\w+ )?(?:breathe|breath|breathing|get (?:enough |any "
          r"|some )?air|get air in|catch (?:my|his|her|a) breath)\b|"
          r"\bbreathing (?:is|feels) (?:\w+ ){0,2}(?:hard|difficult|labored|laboured|painful|"
          r"shallow)\b",
          unless=rf"§ (?:\w+ )?through (?:my|his|her|the|it)|(?:blocked|stuffy|runny) nose|"
                 rf"{_EXERTION}|\b(?:laughing|laughter)\b",
          force=_AT_REST),
    _rule("not-breathing", B,
          r"\b(?:is not|are not|was not|not|stopped|has stopped|no longer|will not|barely) "
          r"breathing\b", negatable=False,
          unless=r"§ (?:\w+ )?through (?:my|his|her|the) (?:nose|mouth)|§ (?:properly )?"
                 r"(?:at night|in my sleep)"),
    _rule("short-of-breath", B,
          r"\b(?:shortness of breath|short of breath)\b|"
          r"\b(?:severe(?:ly)?|really|very|extremely|badly|suddenly|so) (?:\w+ ){0,2}"
          r"(?:breathless|out of breath|winded)\b|\b(?:breathless|out of breath|winded) "
          r"(?:\w+ ){0,3}(?:at rest|sitting|lying|resting|even when|doing nothing|right now)\b",
          unless=rf"\b(?:a bit|a little|slightly|bit|little|mildly|kind of|sort of) §|"
                 rf"{_EXERTION}|\b(?:when|if) i (?:run|exercise|train|climb|walk)\b|"
                 rf"\b(?:laughing|laughter)\b",
          force=_AT_REST),
    _rule("gasping-choking", B,
          r"\bgasping for (?:air|breath)\b|"
          r"\b(?:is|are|am|was|started|keeps|keep|he is|she is|someone is) choking\b|"
          r"\bchoking on (?:a|an|some|his|her|my|food|piece|grape|bone|candy|toy|water)\b|"
          r"\b(?:i am|i feel like i am|he is|she is|they are|we are|baby is|i feel|feel like "
          r"i am) (?:\w+ )?suffocating\b", unless=_EXERTION, force=_AT_REST),
    _rule("airway-swelling", B,
          r"\b(?:throat|tongue|airway|airways|windpipe) (?:<FILL> |\w+ ){0,5}(?:closing|closed|"
          r"swelling|swollen|swells|swelled|tightening)\b|\b(?:swelling|swollen) (?:\w+ ){0,2}"
          r"(?:throat|tongue|airway)\b|\b(?:anaphylaxis|anaphylactic)\b|"
          r"\b(?:severe|bad|serious|major|massive) allergic reaction\b|"
          r"\ballergic reaction (?:\w+ ){0,4}(?:throat|breath|breathe|breathing|swelling|"
          r"swollen|epipen|epi pen)\b|"
          r"\b(?:used|using|use|gave|give|had to use|needed) (?:my|his|her|an|the|their) "
          r"(?:epipen|epi pen)\b", unless=r"\bhistory of §"),
    _rule("allergen", B,
          r"\b(?:stung by|bee sting|wasp sting|allergic to|allergy to|ate (?:\w+ )?(?:peanuts|"
          r"nuts|shellfish|prawns|shrimp))\b|\ballergic\b", weight=1),
    _rule("swelling-or-hives", B,
          r"\b(?:face|lips|lip|eyes|tongue|mouth|throat) (?:<FILL> ){0,3}(?:swelling|swollen|"
          r"puffing up|tight|tightening)\b|\bhives\b|\bswelling up\b", weight=1),
    _rule("turning-blue", B,
          r"\b(?:lips|face|skin|he|she|they|baby|i|son|daughter|kid|child|toddler) (?:\w+ ){0,2}"
          r"(?:turning|turned|going|gone|are|is|look|looks|looking) (?:\w+ )?blue\b"),
    _rule("asthma-attack", B,
          r"\b(?:bad|severe|serious|major|terrible|worst) asthma attack\b|"
          r"\binhaler (?:is not|does not|did not|not|will not|is no longer|stopped) "
          r"(?:help|helping|work|working)\b|"
          r"\basthma attack (?:\w+ ){0,3}(?:cannot|not helping|not working|getting worse)\b|"
          r"\b(?:wheezing|wheezy|wheeze) (?:badly|really bad|very bad|so bad|heavily|a lot)\b",
          negatable=False),
    _rule("low-oxygen", B,
          r"\b(?:oxygen|spo2|o2|sats|saturation) (?:\w+ ){0,3}(?:is|at|of|dropped to|down to|"
          r"reads|says|was|showing|shows|reading) (?:\w+ )?(?:[5-8]\d)\b",
          unless=r"\b(?:overnight|during sleep|while sleeping|at night|last night|in my sleep|"
                 r"while asleep|dipped|dips)\b"),
    # --- other emergencies ---------------------------------------------------------------------
    _rule("unconscious", X,
          r"\b(?:unconscious|unresponsive|not conscious|lost consciousness|losing "
          r"consciousness|no pulse)\b|\bcannot (?:find|feel) (?:a|his|her|their) pulse\b",
          negatable=False, unless=r"§ (?:bias|mind|thoughts?|habits?|level|processing)"),
    _rule("not-responding", X,
          r"\b(?:he|she|they|<KIN>|someone|somebody) (?:\w+ ){0,3}(?:is not|not|will not|"
          r"would not|is|are not|keeps) (?:responding|moving|waking up|wake up)\b|"
          r"\bcannot (?:wake|rouse) (?:him|her|them|my \w+|the baby)\b", negatable=False),
    _rule("seizure", X,
          r"\b(?:seizure|seizures|seizing|convulsing|convulsion|convulsions|convulsed)\b|"
          r"\bhaving a fit\b",
          unless=r"§ up\b|§ (?:about|over)\b|§ (?:\w+ ){0,3}<AGO>|\bhistory of §|"
                 r"\bused to (?:have )?§|\bepilepsy medication\b"),
    _rule("fainting", X,
          r"\b(?:faint|fainted|fainting|faints|lightheaded and faint)\b",
          unless=r"\b(?:nearly|almost|about to|could have|practically) (?:\w+ )?§ (?:\w+ ){0,2}"
                 r"when (?:i|we) (?:saw|looked|read|checked|heard|opened|got)|§ (?:line|signal|"
                 r"smell|sound|memory|praise|hope|glow|outline|trace|idea|hint|light|ish)|\ba §|"
                 r"\bfaintest\b"),
    _rule("passing-out", X,
          r"\b(?:pass|passed|passing|passes) out\b|\b(?:black|blacked|blacking) out\b|"
          r"\b(?:going to|about to|gonna|might|could|feel like i (?:am going to|will|could|"
          r"might)) (?:collapse|faint|pass out|black out)\b",
          unless=r"§ (?:\w+ )?(?:at|by|around|before) (?:\d|\w+ (?:pm|am)\b)|§ (?:\w+ )?(?:on|in)"
                 r" (?:the|my) (?:couch|sofa|bed|chair|tv|armchair)|§ (?:early|asleep|tired|"
                 r"cold)|§ (?:\w+ ){0,2}(?:after|from) (?:\w+ ){0,2}(?:party|drinks|drinking|"
                 r"beers|wine|work|shift|dinner|a long day)|§ (?:\w+ )?(?:watching|and woke|"
                 r"and slept|for \d+ hours|by \d)|§ (?:\w+ ){0,4}(?:sleep|slept|woke|nap)\b|"
                 r"§ (?:\w+ ){0,2}(?:drunk|drinking|from alcohol)|§ (?:the|my) (?:lights|room|"
                 r"windows|screen)"),
    _rule("collapse", X,
          r"\b(?:collapse|collapsed|collapsing|collapses)\b",
          unless=r"\b(?:hrv|pace|score|readiness|recovery|sleep|form|performance|plan|plans|"
                 r"streak|numbers|graph|data|tent|market|stock|stocks|economy|bridge|building|"
                 r"roof|team|mood|motivation|confidence|training|fitness|it|everything|results|"
                 r"values|power|cadence|speed|rate|hr|rating|price|prices|deal|project|"
                 r"relationship|marriage|company|business|world|vein|arch|arches|wave|"
                 r"government|structure|section|menu|list|view) (?:\w+ ){0,2}(?:has |have )?§|"
                 r"§ (?:\w+ )?(?:in|into|onto|on) (?:the |my |a )?(?:bed|couch|sofa|chair|"
                 r"armchair|heap)|§ (?:the|this|that) (?:menu|section|list|view|panel)"),
    _rule("bleeding", X,
          r"\b(?:bleeding|bleed|bled) (?:\w+ ){0,2}(?:heavily|a lot|badly|profusely|"
          r"everywhere|non ?stop|will not stop|that will not stop|so much|really bad)\b|"
          r"\b(?:will not|cannot|does not|did not|can not) stop (?:the )?bleeding\b|"
          r"\blosing (?:a lot of|so much|lots of) blood\b|"
          r"\b(?:vomiting|throwing up|coughing up|coughing|spitting up|puking) (?:up )?"
          r"(?:blood|bloody)\b|\bblood everywhere\b|\bdeep (?:cut|wound|gash)\b"),
    _rule("worst-pain", X,
          r"\bworst pain (?:\w+ ){0,4}(?:of my life|i have ever (?:had|felt)|ever)\b|"
          r"\b(?:severe|unbearable|excruciating) (?:\w+ )?pain (?:\w+ ){0,3}(?:cannot (?:stand|"
          r"move|walk|breathe)|can barely)\b"),
    _rule("danger", X,
          r"\b(?:scared|afraid|fear|fearing|fearful|terrified) (?:for|of losing) (?:my|his|her|"
          r"their) life\b|"
          r"\b(?:<KIN>|he|she|they|someone|somebody) (?:\w+ ){0,3}(?:is|keeps|has been|was|"
          r"started|are) (?:hurting|hitting|beating|choking|strangling|attacking) me\b|"
          r"\b(?:someone|somebody|a man|a guy|a woman|he|they|an intruder|a stranger) (?:is|are) "
          r"(?:trying to )?(?:break|breaking|get|getting) (?:in|into)\b|"
          r"\b(?:threatening to|going to|wants to|said he would|said she would|tried to|will|"
          r"might|is going to) (?:kill|~hurt) me\b|"
          r"\b(?:hit|struck|run over|knocked down) by (?:a|an|the) (?:car|truck|bus|lorry|van|"
          r"motorbike|motorcycle|cyclist|vehicle|train)\b",
          negatable=False,
          unless=r"\b(?:like|as if|as though) (?:\w+ ){0,4}§|§ (?:\w+ ){0,3}(?:years?|months?) "
                 r"ago|\b(?:movie|film|show|game|book|dream)\b"),
    _rule("violence", X,
          r"\b(?:<KIN>|he|she|they|someone|somebody) (?:\w+ ){0,2}(?:hit|beat|punched|kicked|"
          r"choked|strangled|attacked|assaulted|stabbed) me\b",
          weight=1, unless=r"§ (?:with|for) (?:a|an|the|that|this|some) (?:\w+ )?(?:workout|"
                           r"session|plan|pillow|question|joke|surprise|bill|news|idea)\b|"
                           r"\b(?:lol|haha|joking|kidding|playing)\b"),
    _rule("fear", X,
          r"\b(?:scared|afraid|terrified|frightened|fear)\b", weight=1),
    _rule("call-emergency", X,
          r"\b(?:call|calling|dial|dialling|dialing|ring|phone) (?:911|999|112|000|111|119|995|"
          r"an ambulance|the ambulance|emergency services|paramedics|the paramedics)\b|"
          r"\b(?:need|needs|send|get) (?:an |the )?ambulance\b",
          unless=r"\b(?:watch|phone|app|tracker|ring|feature|detection|sos|device|setting|"
                 r"settings) (?:\w+ ){0,4}§|§ (?:\w+ ){0,2}(?:automatically|for me if|if i "
                 r"fall)"),
)


_ESCAPES = re.compile(r"\\[a-zA-Z]")
_WORD = re.compile(r"[a-z]{3,}")


def vocabulary_terms(rules: tuple[Rule, ...] = RULES) -> set[str]:
    """Every word (three letters or more) the rules and their guards are written with: what a
    misspelt token may be corrected to."""
    terms: set[str] = set()
    for rule in rules:
        for pattern in (rule.pattern, rule.unless, rule.force):
            if pattern is not None:
                terms.update(_WORD.findall(_ESCAPES.sub(" ", pattern.pattern)))
    return terms
